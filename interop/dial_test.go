package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
	"github.com/wsloop/wsloop/internal/testtool"
)

// wsloop's client (engine.Dial) against servers no one here wrote: Node's
// ws and Python's websockets, each plain, with permessage-deflate and over
// TLS. The servers print every protocol error they see in what the client
// sent and the close code each connection ended with; a test fails on any
// error line, on a wrong echo, and on a close that is not the expected
// one.

// thirdParty is a running third-party server script.
type thirdParty struct {
	addr  string
	mu    sync.Mutex
	lines []string
	more  chan struct{}
}

// startThirdParty runs argv, waits for its "listening PORT" line and
// collects its other lines until the test ends (closing its stdin ends it).
func startThirdParty(t *testing.T, argv ...string) *thirdParty {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("%v: %v", argv, err)
	}
	tp := &thirdParty{more: make(chan struct{}, 1)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if port, ok := strings.CutPrefix(line, "listening "); ok {
				ready <- port
				continue
			}
			tp.mu.Lock()
			tp.lines = append(tp.lines, line)
			tp.mu.Unlock()
			select {
			case tp.more <- struct{}{}:
			default:
			}
		}
		close(ready)
	}()
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cancel()
			<-done
		}
		cancel()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", argv[0], stderr.String())
		}
	})
	select {
	case port, ok := <-ready:
		if !ok {
			t.Fatalf("%v exited before listening:\n%s", argv, stderr.String())
		}
		tp.addr = "127.0.0.1:" + port
	case <-time.After(20 * time.Second):
		t.Fatalf("%v not listening after 20s:\n%s", argv, stderr.String())
	}
	return tp
}

// waitLine waits for a line with prefix and returns it.
func (tp *thirdParty) waitLine(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		tp.mu.Lock()
		for i, l := range tp.lines {
			if strings.HasPrefix(l, prefix) {
				tp.lines = append(tp.lines[:i:i], tp.lines[i+1:]...)
				tp.mu.Unlock()
				return l
			}
		}
		tp.mu.Unlock()
		select {
		case <-tp.more:
		case <-deadline:
			t.Fatalf("the server never printed %q", prefix)
		}
	}
}

// errors returns the protocol errors the server reported.
func (tp *thirdParty) errorLines() []string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var out []string
	for _, l := range tp.lines {
		if strings.HasPrefix(l, "error") {
			out = append(out, l)
		}
	}
	return out
}

// client records a dialed connection's messages and its end.
type client struct {
	handler.Base
	msgs   chan msg
	closed chan error
	pongs  chan string
}

type msg struct {
	op   handler.Op
	data []byte
}

func newClient() *client {
	return &client{msgs: make(chan msg, 64), closed: make(chan error, 4), pongs: make(chan string, 4)}
}

func (c *client) OnMessage(_ handler.Conn, op handler.Op, data []byte) {
	c.msgs <- msg{op, bytes.Clone(data)}
}
func (c *client) OnPong(_ handler.Conn, data []byte) { c.pongs <- string(data) }
func (c *client) OnClose(_ handler.Conn, err error)  { c.closed <- err }

func (c *client) next(t *testing.T) msg {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return msg{}
	}
}

func (c *client) waitClosed(t *testing.T) error {
	t.Helper()
	select {
	case err := <-c.closed:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("OnClose did not run within 10s")
		return nil
	}
}

// selfSignedFiles writes a self-signed certificate for 127.0.0.1 and its
// key as PEM files, for a third-party server.
func selfSignedFiles(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	cert, certPEM := enginetest.Certificate(t)
	kder, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// dialThirdParty runs the exchange against one server script in the
// three modes.
func dialThirdParty(t *testing.T, argv ...string) {
	for _, mode := range []string{"plain", "deflate", "tls"} {
		t.Run(mode, func(t *testing.T) {
			args := append(append([]string(nil), argv...), mode)
			scheme := "ws"
			if mode == "tls" {
				cert, key := selfSignedFiles(t)
				args = append(args, cert, key)
				scheme = "wss"
			}
			tp := startThirdParty(t, args...)
			cli := newClient()
			srv := engine.New(cli, engine.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err := srv.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				srv.Shutdown(ctx)
			})
			opts := &engine.DialOptions{Deflate: mode == "deflate", TLSConfig: &tls.Config{InsecureSkipVerify: true}}
			url := scheme + "://" + tp.addr + "/echo"
			conn, resp, err := srv.Dial(context.Background(), url, opts)
			if err != nil {
				t.Fatal(err)
			}
			ext := tp.waitLine(t, "open ")
			if mode == "deflate" {
				if !strings.Contains(resp.Header.Get("Sec-Websocket-Extensions"), "permessage-deflate") {
					t.Fatalf("permessage-deflate not negotiated: offer %q, answer %q", ext, resp.Header.Get("Sec-Websocket-Extensions"))
				}
				if srv.Stats().Deflate.Negotiated != 1 {
					t.Fatal("the client's deflate stats do not count the negotiation")
				}
			}
			t.Logf("offer %q, answer %q", ext, resp.Header.Get("Sec-Websocket-Extensions"))
			json := bytes.Repeat([]byte(`{"sym":"ABC","bid":101.25,"ask":101.5,"qty":300}`), 2000)
			for _, m := range []msg{
				{handler.Text, []byte("hello from wsloop ✓")},
				{handler.Binary, []byte{0, 1, 2, 0xfe, 0xff}},
				{handler.Text, []byte("")},
				{handler.Binary, bytes.Repeat([]byte{0xAB}, 200_000)},
				{handler.Text, json},
				{handler.Text, json[:3000]},
			} {
				if err := conn.WriteMessage(m.op, m.data); err != nil {
					t.Fatal(err)
				}
				got := cli.next(t)
				if got.op != m.op || !bytes.Equal(got.data, m.data) {
					t.Fatalf("echo of %d bytes (op %v): got %d bytes (op %v)", len(m.data), m.op, len(got.data), got.op)
				}
			}
			conn.Ping([]byte("ping from wsloop"))
			select {
			case p := <-cli.pongs:
				if p != "ping from wsloop" {
					t.Fatalf("pong %q", p)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no pong")
			}
			conn.Close(1000, "done")
			var ce *handler.CloseError
			if err := cli.waitClosed(t); !errors.As(err, &ce) || ce.Code != 1000 {
				t.Fatalf("client OnClose %v", err)
			}
			if l := tp.waitLine(t, "close "); l != "close 1000" {
				t.Fatalf("server saw %q, want close 1000", l)
			}

			// The server closes with a code of its own.
			conn, _, err = srv.Dial(context.Background(), url, opts)
			if err != nil {
				t.Fatal(err)
			}
			conn.WriteMessage(handler.Text, []byte("close-4001"))
			if err := cli.waitClosed(t); !errors.As(err, &ce) || ce.Code != 4001 || ce.Reason != "bye" || !ce.Remote {
				t.Fatalf("client OnClose %v, want the server's 4001 bye", err)
			}
			if l := tp.waitLine(t, "close "); l != "close 4001" {
				t.Fatalf("server saw %q, want close 4001", l)
			}
			if errs := tp.errorLines(); len(errs) > 0 {
				t.Fatalf("the server saw protocol errors: %q", errs)
			}
			if st := srv.Stats(); st.Dialed != 2 || st.Open != 0 {
				t.Fatalf("client stats %+v", st)
			}
		})
	}
}

// TestDialNodeWS dials Node's ws server.
func TestDialNodeWS(t *testing.T) {
	dir := filepath.Join("testdata", "node")
	node, ws := testtool.NodeWS(t, dir)
	t.Setenv("WS_MODULE", ws) // server.mjs loads ws from there
	dialThirdParty(t, node, filepath.Join(dir, "server.mjs"))
}

// TestDialPythonWebsockets dials Python's websockets server.
func TestDialPythonWebsockets(t *testing.T) {
	py := testtool.PythonWebsockets(t, "INTEROP_PYTHON")
	dialThirdParty(t, py, filepath.Join("testdata", "python", "server.py"))
}
