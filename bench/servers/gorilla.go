package servers

import (
	"io"
	"net/http"
	"sync"

	"github.com/gorilla/websocket"
)

// gorilla/websocket: a goroutine per connection (the net/http handler's),
// reading with NextReader and writing with NextWriter so that a message is
// streamed through the connection's buffers instead of being assembled, and
// a shared WriteBufferPool so an idle connection holds no write buffer (the
// two memory recommendations of the package documentation). Writes are
// serialised by a per-connection mutex because gorilla allows one concurrent
// writer; broadcast uses a PreparedMessage so the frame is encoded once.
func init() {
	register(Info{
		Name: "gorilla", Module: "github.com/gorilla/websocket", Version: "v1.5.3",
		Notes: "net/http + Upgrader{WriteBufferPool}, NextReader/NextWriter, PreparedMessage broadcast",
	}, runGorilla)
}

type gorillaConn struct {
	c  *websocket.Conn
	mu sync.Mutex
}

func runGorilla(addr string, set Settings, ready func()) error {
	up := websocket.Upgrader{WriteBufferPool: &sync.Pool{}}
	conns := newConnSet[*gorillaConn]()
	var snapPool sync.Pool
	h := func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		gc := &gorillaConn{c: c}
		conns.add(gc)
		defer func() {
			conns.remove(gc)
			c.Close()
		}()
		for {
			mt, rd, err := c.NextReader()
			if err != nil {
				return
			}
			if mt == websocket.TextMessage {
				data, err := io.ReadAll(rd)
				if err != nil {
					return
				}
				if rest, ok := isBroadcast(true, data); ok {
					pm, err := websocket.NewPreparedMessage(websocket.TextMessage, rest)
					if err != nil {
						return
					}
					sp, _ := snapPool.Get().(*[]*gorillaConn)
					if sp == nil {
						sp = new([]*gorillaConn)
					}
					*sp = conns.snapshot(*sp)
					for _, o := range *sp {
						o.mu.Lock()
						_ = o.c.WritePreparedMessage(pm)
						o.mu.Unlock()
					}
					clear(*sp)
					snapPool.Put(sp)
					continue
				}
				gc.mu.Lock()
				err = c.WriteMessage(mt, data)
				gc.mu.Unlock()
				if err != nil {
					return
				}
				continue
			}
			gc.mu.Lock()
			wr, err := c.NextWriter(mt)
			if err == nil {
				_, err = io.Copy(wr, rd)
				if cerr := wr.Close(); err == nil {
					err = cerr
				}
			}
			gc.mu.Unlock()
			if err != nil {
				return
			}
		}
	}
	ln, err := listen(addr, set.ReusePort)
	if err != nil {
		return err
	}
	ready()
	return http.Serve(ln, http.HandlerFunc(h))
}
