package clientconformance

import (
	"errors"
	"net"
	"time"
)

// socketClosed reports whether the peer's end of stream or an error waits
// in the socket. A Windows socket has no non-blocking peek, so it peeks
// through the connection's reader with a deadline a few milliseconds
// ahead: a byte that arrives is kept in the reader, and a timeout means
// open.
func (sc *serverConn) socketClosed() bool {
	_ = sc.c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	_, err := sc.br.Peek(1)
	_ = sc.c.SetReadDeadline(time.Time{})
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}
