package engine

// SetOpenedHook makes s call f on the event loop each time it has taken a
// new connection in (before its handshake), so that a test can move a fake
// clock only once the connection's timers run. Call it before serving.
func SetOpenedHook(s *Server, f func()) { s.testHookOpened = f }
