package servers

import (
	"net"
	"net/http"
	"sync"

	llibtls "github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// lesismal/nbio: nbhttp's own non-blocking HTTP server and its websocket
// upgrader in IOModNonBlocking (every connection on nbio's epoll pollers, no
// goroutine per connection), MaxLoad raised for many connections and
// ReleaseWebsocketPayload on, as nbio's million-connection examples do.
// Message callbacks run on nbio's default executor. Broadcast writes the
// message to each connection with Conn.WriteMessage, which is safe for
// concurrent use and queues on nbio's write buffers.
func init() {
	register(Info{
		Name: "nbio", Module: "github.com/lesismal/nbio", Version: "v1.6.12",
		Notes: "nbhttp.Engine IOModNonBlocking, MaxLoad 1M, ReleaseWebsocketPayload",
	}, runNbio)
}

func runNbio(addr string, set Settings, ready func()) error {
	conns := newConnSet[*websocket.Conn]()
	var snapPool sync.Pool
	up := websocket.NewUpgrader()
	up.OnOpen(func(c *websocket.Conn) { conns.add(c) })
	up.OnClose(func(c *websocket.Conn, _ error) { conns.remove(c) })
	up.OnMessage(func(c *websocket.Conn, mt websocket.MessageType, data []byte) {
		if rest, ok := isBroadcast(mt == websocket.TextMessage, data); ok {
			sp, _ := snapPool.Get().(*[]*websocket.Conn)
			if sp == nil {
				sp = new([]*websocket.Conn)
			}
			*sp = conns.snapshot(*sp)
			for _, o := range *sp {
				_ = o.WriteMessage(websocket.TextMessage, rest)
			}
			clear(*sp)
			snapPool.Put(sp)
			return
		}
		_ = c.WriteMessage(mt, data)
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = up.Upgrade(w, r, nil)
	})
	conf := nbhttp.Config{
		Network:                 "tcp",
		Addrs:                   []string{addr},
		MaxLoad:                 1_000_000,
		ReleaseWebsocketPayload: true,
		IOMod:                   nbhttp.IOModNonBlocking,
		Handler:                 mux,
		NPoller:                 set.Loops,
	}
	if set.TLS != nil {
		// nbio's TLS: Config.AddrsTLS with Config.TLSConfig, a
		// *tls.Config of lesismal/llib's non-blocking fork of crypto/tls
		// (handshakes and records on the pollers).
		cert, err := llibtls.X509KeyPair(set.TLS.CertPEM, set.TLS.KeyPEM)
		if err != nil {
			return err
		}
		conf.Addrs, conf.AddrsTLS = nil, []string{addr}
		conf.TLSConfig = &llibtls.Config{Certificates: []llibtls.Certificate{cert}}
	}
	if set.ReusePort {
		conf.Listen = func(_, a string) (net.Listener, error) { return listen(a, true) }
	}
	engine := nbhttp.NewEngine(conf)
	if err := engine.Start(); err != nil {
		return err
	}
	ready()
	select {}
}
