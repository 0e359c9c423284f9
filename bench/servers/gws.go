package servers

import (
	"crypto/tls"
	"sync"

	"github.com/lxzan/gws"
)

// lxzan/gws: gws's own server (it parses the upgrade request straight from
// TCP), with the options of the README's "Best Practice" section:
// ParallelEnabled, Recovery and PermessageDeflate enabled (compression is
// only used when the client offers it; the load generator does not). The
// README's read deadline refreshed by pings is left out so idle connections
// are not dropped during the idle hold. Broadcast uses gws.Broadcaster, which
// encodes the frame once and queues it on each connection asynchronously.
func init() {
	register(Info{
		Name: "gws", Module: "github.com/lxzan/gws", Version: "v1.10.1",
		Notes: "gws.NewServer, ParallelEnabled+Recovery+PermessageDeflate (README Best Practice), Broadcaster",
	}, func(addr string, set Settings, ready func()) error { return runGWS(addr, set, ready, true) })
	// gws-serial is gws with its default ParallelEnabled false: with it
	// on, messages of one connection are handled concurrently, so echoes
	// of several messages in flight on one connection can come back out of
	// order (the open-loop echo, which keeps several in flight, sees them
	// as mismatches).
	register(Info{
		Name: "gws-serial", Module: "github.com/lxzan/gws", Version: "v1.10.1",
		Notes: "gws.NewServer, Recovery+PermessageDeflate, ParallelEnabled off (messages of a connection handled in order), Broadcaster",
	}, func(addr string, set Settings, ready func()) error { return runGWS(addr, set, ready, false) })
}

type gwsHandler struct {
	gws.BuiltinEventHandler
	conns    *connSet[*gws.Conn]
	snapPool sync.Pool
}

func (h *gwsHandler) OnOpen(c *gws.Conn)                 { h.conns.add(c) }
func (h *gwsHandler) OnClose(c *gws.Conn, _ error)       { h.conns.remove(c) }
func (h *gwsHandler) OnPing(c *gws.Conn, payload []byte) { _ = c.WritePong(payload) }

func (h *gwsHandler) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	if rest, ok := isBroadcast(m.Opcode == gws.OpcodeText, m.Bytes()); ok {
		// The payload is read again by the write tasks after OnMessage has
		// returned and m is recycled, so it gets its own copy.
		b := gws.NewBroadcaster(gws.OpcodeText, append([]byte(nil), rest...))
		sp, _ := h.snapPool.Get().(*[]*gws.Conn)
		if sp == nil {
			sp = new([]*gws.Conn)
		}
		*sp = h.conns.snapshot(*sp)
		for _, o := range *sp {
			_ = b.Broadcast(o, nil)
		}
		_ = b.Close()
		clear(*sp)
		h.snapPool.Put(sp)
		return
	}
	_ = c.WriteMessage(m.Opcode, m.Bytes())
}

func runGWS(addr string, set Settings, ready func(), parallel bool) error {
	h := &gwsHandler{conns: newConnSet[*gws.Conn]()}
	srv := gws.NewServer(h, &gws.ServerOption{
		ParallelEnabled:   parallel,
		Recovery:          gws.Recovery,
		PermessageDeflate: gws.PermessageDeflate{Enabled: true},
	})
	ln, err := listen(addr, set.ReusePort)
	if err != nil {
		return err
	}
	if set.TLS != nil {
		// gws's TLS mode is Server.RunTLS(addr, certFile, keyFile): it
		// clones ServerOption.TlsConfig, sets the certificate and ALPN
		// http/1.1, and runs RunListener on tls.NewListener. Those are its
		// steps, on our listener, so that ready is called once it listens
		// (and -reuseport applies); the handshake then runs in the
		// connection's goroutine, as with RunTLS.
		cert, err := tls.X509KeyPair(set.TLS.CertPEM, set.TLS.KeyPEM)
		if err != nil {
			return err
		}
		conf := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
		ln = tls.NewListener(ln, conf)
	}
	ready()
	return srv.RunListener(ln)
}
