//go:build windows || wsloop_portable

package engine

import (
	"net"
	"time"
)

// refuseWait bounds how long refuse waits for the client's first bytes
// and for its response to be taken by the socket.
const refuseWait = 2 * time.Millisecond

// refuse answers a connection the server will not serve with resp and
// closes it, from the accepting goroutine: a refused socket holds its
// descriptor for no longer than this call. Whatever the client already
// sent is read first, so that the close does not turn into a reset that
// would destroy the response in flight.
//
// Windows (and any system with the wsloop_portable tag, which is how
// Linux tests this road): through net.Conn alone, since a Windows socket
// has no non-blocking read to call. The read waits at most refuseWait for
// the client's first bytes, so a refusal costs its acceptor up to that long
// where the raw road of refuse_unix.go costs nothing; it stops at the
// first short read, the point where the raw road would see EAGAIN.
func refuse(c net.Conn, resp []byte) {
	var buf [1024]byte
	_ = c.SetReadDeadline(socketDeadline(refuseWait))
	for i := 0; i < 8; i++ {
		if n, err := c.Read(buf[:]); n < len(buf) || err != nil {
			break
		}
	}
	_ = c.SetWriteDeadline(socketDeadline(refuseWait)) // a fresh socket's send buffer takes it whole
	_, _ = c.Write(resp)
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.Close()
}
