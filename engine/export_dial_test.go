package engine

// SetDialControl makes a dial with o call f with each address it tries to
// connect to, in order, before the connect.
func SetDialControl(o *DialOptions, f func(address string)) { o.control = f }

// SetDialNonce makes a dial with o send the Sec-WebSocket-Key of nonce.
func SetDialNonce(o *DialOptions, nonce [16]byte) { o.nonce = &nonce }
