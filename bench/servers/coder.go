package servers

import (
	"context"
	"io"
	"net/http"
	"sync"

	"github.com/coder/websocket"
)

// coder/websocket: net/http + websocket.Accept with default options, a
// goroutine per connection streaming each message from Reader to Writer (the
// library's own echo example does this). Writes are safe for concurrent use,
// so broadcast calls Conn.Write on each connection.
func init() {
	register(Info{
		Name: "coder", Module: "github.com/coder/websocket", Version: "v1.8.15",
		Notes: "net/http + Accept(default options), Reader->Writer streaming, Conn.Write broadcast",
	}, runCoder)
}

func runCoder(addr string, set Settings, ready func()) error {
	conns := newConnSet[*websocket.Conn]()
	var snapPool sync.Pool
	h := func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		conns.add(c)
		defer func() {
			conns.remove(c)
			c.CloseNow()
		}()
		ctx := context.Background()
		for {
			typ, rd, err := c.Reader(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageText {
				data, err := io.ReadAll(rd)
				if err != nil {
					return
				}
				if rest, ok := isBroadcast(true, data); ok {
					sp, _ := snapPool.Get().(*[]*websocket.Conn)
					if sp == nil {
						sp = new([]*websocket.Conn)
					}
					*sp = conns.snapshot(*sp)
					for _, o := range *sp {
						_ = o.Write(ctx, websocket.MessageText, rest)
					}
					clear(*sp)
					snapPool.Put(sp)
					continue
				}
				if err := c.Write(ctx, typ, data); err != nil {
					return
				}
				continue
			}
			wr, err := c.Writer(ctx, typ)
			if err != nil {
				return
			}
			if _, err := io.Copy(wr, rd); err != nil {
				return
			}
			if err := wr.Close(); err != nil {
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
