package interop

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
	"github.com/wsloop/wsloop/internal/testtool"
)

// addrRecorder echoes and reports the addresses of each connection it
// opens.
type addrRecorder struct {
	handler.Base
	opened chan [2]string // RemoteAddr, LocalAddr
}

func (a *addrRecorder) OnOpen(c handler.Conn) {
	a.opened <- [2]string{c.RemoteAddr().String(), c.LocalAddr().String()}
}

func (a *addrRecorder) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	_ = c.WriteMessage(op, data)
}

// haproxyPath finds HAProxy, which Debian installs in /usr/sbin (not on
// every user's PATH).
func haproxyPath() (string, bool) {
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p, true
	}
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy", true
	}
	return "", false
}

// HAProxy in TCP mode in front of the engine, sending the PROXY protocol
// (send-proxy: version 1; send-proxy-v2: version 2, also with its CRC32C
// TLV), with its own TCP health checks (a v2 LOCAL header) running. A
// client on 127.0.0.23 echoes through it; the server must see that address
// and the frontend's, not HAProxy's connection from 127.0.0.1, and refuse
// no header.
func TestHAProxyProxyProtocol(t *testing.T) {
	bin, ok := haproxyPath()
	if !ok {
		testtool.Skip(t, "haproxy", "apt-get install -y haproxy")
	}
	for _, mode := range []string{"send-proxy", "send-proxy-v2", "send-proxy-v2 proxy-v2-options crc32c"} {
		t.Run(mode, func(t *testing.T) {
			rec := &addrRecorder{opened: make(chan [2]string, 64)}
			srv := enginetest.Start(t, rec, engine.Options{
				ProxyProtocol: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, // HAProxy's side only
			})
			// HAProxy's frontend socket is made here and inherited
			// (bind fd@3): it listens before HAProxy starts, so there is
			// no port to race for and nothing to wait for.
			fe, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer fe.Close()
			feFile, err := fe.(*net.TCPListener).File()
			if err != nil {
				t.Fatal(err)
			}
			defer feFile.Close()
			cfg := fmt.Sprintf(`global
	maxconn 64
defaults
	mode tcp
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend fe
	bind fd@3
	default_backend be
backend be
	server wsloop %s source 127.0.0.1 %s check inter 100ms check-send-proxy
`, srv.Addr(), mode)
			path := filepath.Join(t.TempDir(), "haproxy.cfg")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var out bytes.Buffer
			cmd := exec.CommandContext(ctx, bin, "-db", "-f", path)
			cmd.ExtraFiles = []*os.File{feFile}
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				cancel()
				t.Fatal(err)
			}
			defer func() {
				cancel()
				_ = cmd.Wait()
				if t.Failed() {
					t.Logf("haproxy output:\n%s", out.String())
				}
			}()

			d := websocket.Dialer{
				HandshakeTimeout: 10 * time.Second,
				NetDial: func(network, addr string) (net.Conn, error) {
					nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 23)}}
					return nd.Dial(network, addr)
				},
			}
			feAddr := fe.Addr().String()
			c, _, err := d.Dial("ws://"+feAddr+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := c.WriteMessage(websocket.TextMessage, []byte("through haproxy")); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "through haproxy" {
				t.Fatalf("echo: %q, %v", msg, err)
			}
			var addrs [2]string
			select {
			case addrs = <-rec.opened:
			case <-time.After(10 * time.Second):
				t.Fatal("no OnOpen")
			}
			if addrs[0] != c.LocalAddr().String() {
				t.Errorf("server saw RemoteAddr %s, want the client's %s", addrs[0], c.LocalAddr())
			}
			if addrs[1] != feAddr {
				t.Errorf("server saw LocalAddr %s, want HAProxy's frontend %s", addrs[1], feAddr)
			}
			_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			st := srv.Stats()
			if st.ProxyHeaders == 0 || len(st.ProxyRefused) != 0 {
				t.Errorf("Stats: ProxyHeaders %d, ProxyRefused %v", st.ProxyHeaders, st.ProxyRefused)
			}
			if !strings.HasPrefix(addrs[0], "127.0.0.23:") {
				t.Errorf("RemoteAddr %s is not on 127.0.0.23", addrs[0])
			}
		})
	}
}
