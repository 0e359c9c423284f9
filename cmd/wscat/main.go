// Command wscat is a command-line WebSocket client in the spirit of
// websocat and wscat, built on wsloop's event-loop client (engine.Dial).
//
//	wscat [flags] ws://host:port/path
//
// Each line of standard input, without its newline, is sent as a text
// message (with -binary, as a binary message). Each message received is
// written to standard output followed by a newline; binary messages are
// written as their raw bytes. When standard input ends, wscat sends a
// close with code 1000, waits for the server's answer and exits 0. Any
// other end (the server closes with a code other than 1000, the connection
// drops without a close frame, the handshake fails) prints the code and
// reason, or the error, on standard error and exits 1. An interrupt
// (Ctrl-C) closes with 1000 as the end of input does.
//
// A server's answer to the last line may come after standard input has
// ended: with -wait D, wscat keeps reading for D before it closes (or
// until the server closes first).
//
// wscat dials through the proxy the environment names, as curl and Go's
// net/http do: HTTPS_PROXY for wss://, HTTP_PROXY for ws://, NO_PROXY for
// the hosts to reach directly (localhost and loopback addresses always
// are). The proxy may be http:// (CONNECT, with user:password@ sent as
// Proxy-Authorization), https:// (for ws:// URLs) or socks5://.
//
// Flags:
//
//	-H 'Name: value'   add a request header (repeatable): Authorization, Cookie, Origin
//	-subprotocol p     offer a subprotocol (repeatable, or comma-separated)
//	-deflate           offer permessage-deflate
//	-insecure          skip the server certificate checks of wss:// (self-signed servers)
//	-binary            send each line as a binary message
//	-timeout d         bound the handshake (default 10s)
//	-wait d            after the end of standard input, keep reading for d before closing
//	-v                 say on standard error where wscat connected (and through
//	                   which proxy), the negotiated subprotocol and extensions,
//	                   and when it waits
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// headers is the repeatable -H flag.
type headers http.Header

func (h headers) String() string { return "" }

func (h headers) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		return fmt.Errorf("want 'Name: value', got %q", v)
	}
	http.Header(h).Add(name, strings.TrimSpace(value))
	return nil
}

// list is a repeatable flag whose values may also be comma-separated.
type list []string

func (l *list) String() string { return strings.Join(*l, ",") }

func (l *list) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// printer writes received messages to standard output and reports the
// end of the connection.
type printer struct {
	handler.Base
	mu   sync.Mutex
	out  io.Writer
	line []byte
	err  error // the first failed write to out
	done chan error
}

// OnMessage writes the message and a newline in one write. It runs on the
// event loop and may block on a slow standard output: that is on purpose.
// The loop serves only this connection, so blocking it stops reading from
// the socket, and TCP's flow control slows the server down instead of
// wscat buffering without bound.
func (p *printer) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.line = append(append(p.line[:0], data...), '\n')
	if _, err := p.out.Write(p.line); err != nil && p.err == nil {
		p.err = err
		_ = c.Close(codec.CloseNormal, "")
	}
}

func (p *printer) OnClose(_ handler.Conn, err error) { p.done <- err }

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wscat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hdr := headers{}
	var subs list
	fs.Var(hdr, "H", "add a request header `'Name: value'` (repeatable)")
	fs.Var(&subs, "subprotocol", "offer a `subprotocol` (repeatable, or comma-separated)")
	deflate := fs.Bool("deflate", false, "offer permessage-deflate")
	insecure := fs.Bool("insecure", false, "skip the server certificate checks of wss://")
	binary := fs.Bool("binary", false, "send each line as a binary message")
	timeout := fs.Duration("timeout", 10*time.Second, "bound the handshake")
	wait := fs.Duration("wait", 0, "after the end of standard input, keep reading for `d` before closing")
	verbose := fs.Bool("v", false, "print the proxy, the negotiated subprotocol and extensions on standard error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: wscat [flags] ws://host:port/path")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	target := fs.Arg(0)

	p := &printer{out: stdout, done: make(chan error, 1)}
	srv := engine.New(p, engine.Options{
		EventLoops: 1,
		Logger:     slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		// The outbound cap protects a server from its slow readers. Here
		// the one reader is the server wscat talks to, and the input is
		// whatever the user pipes in: let it queue.
		MaxOutboundBytes: 1 << 30,
		IdleTimeout:      -1, // an interactive session may be quiet for long
	})
	if err := srv.Start(context.Background()); err != nil {
		fmt.Fprintln(stderr, "wscat:", err)
		return 1
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	opts := &engine.DialOptions{Header: http.Header(hdr), Subprotocols: subs, Deflate: *deflate, HandshakeTimeout: *timeout}
	if *insecure {
		opts.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	}
	// The environment's proxy, as Dial would use by default; asked here
	// so that -v can say which one it was. Dial calls it on this
	// goroutine.
	var proxy *url.URL
	opts.Proxy = func(r *http.Request) (*url.URL, error) {
		u, err := http.ProxyFromEnvironment(r)
		proxy = u
		return u, err
	}
	conn, resp, err := srv.Dial(ctx, target, opts)
	if err != nil {
		fmt.Fprintln(stderr, "wscat:", err)
		return 1
	}
	if *verbose {
		describe(stderr, target, proxy, conn, resp)
	}

	op := handler.Text
	if *binary {
		op = handler.Binary
	}
	sent := make(chan error, 1) // why input stopped: nil at its end
	go func() { sent <- send(conn, stdin, op) }()

	interrupted := ctx.Done()
	failed := false
	var closeErr error
	var waited <-chan time.Time
	for done := false; !done; {
		select {
		case err := <-sent:
			sent = nil
			if err != nil {
				fmt.Fprintln(stderr, "wscat:", err)
				failed = true
			} else if *wait > 0 {
				// The answer to the last line may still be on its way.
				if *verbose {
					fmt.Fprintf(stderr, "wscat: end of input, reading for %v\n", *wait)
				}
				t := time.NewTimer(*wait)
				defer t.Stop()
				waited = t.C
				continue
			}
			_ = conn.Close(codec.CloseNormal, "") // ErrClosed if it ended: OnClose says how
		case <-waited:
			waited = nil
			_ = conn.Close(codec.CloseNormal, "")
		case <-interrupted:
			interrupted = nil
			_ = conn.Close(codec.CloseNormal, "")
		case closeErr = <-p.done:
			done = true
		}
	}
	if code := report(closeErr, p, stderr); code != 0 || failed {
		return 1
	}
	return 0
}

// describe says where wscat connected, through which proxy, and what the
// handshake negotiated.
func describe(w io.Writer, target string, proxy *url.URL, conn handler.Conn, resp *http.Response) {
	if u, err := url.Parse(target); err == nil {
		target = u.Redacted()
	}
	if proxy != nil {
		fmt.Fprintf(w, "wscat: connected to %s through the proxy %s\n", target, proxy.Redacted())
	} else {
		fmt.Fprintf(w, "wscat: connected to %s (%s)\n", target, conn.RemoteAddr())
	}
	sub := conn.Subprotocol()
	if sub == "" {
		sub = "(none)"
	}
	fmt.Fprintf(w, "wscat: subprotocol: %s\n", sub)
	ext := strings.Join(resp.Header.Values("Sec-Websocket-Extensions"), ", ")
	if ext == "" {
		ext = "(none)"
	}
	fmt.Fprintf(w, "wscat: extensions: %s\n", ext)
}

// send writes each line of in as a message until in ends (nil) or fails,
// or the connection is gone.
func send(conn handler.Conn, in io.Reader, op handler.Op) error {
	br := bufio.NewReaderSize(in, 64<<10)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			line = line[:len(line)-1]
		} else if len(line) == 0 && err != nil {
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("reading standard input: %w", err)
		}
		if op == handler.Text && !utf8.Valid(line) {
			// RFC 6455 §5.6: a text message must be UTF-8.
			return fmt.Errorf("line %d is not valid UTF-8: send it with -binary", n)
		}
		if werr := conn.WriteMessage(op, line); werr != nil {
			if errors.Is(werr, handler.ErrClosed) {
				return nil // the connection ended: OnClose says how
			}
			return werr
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("reading standard input: %w", err)
		}
	}
}

// report turns the way the connection ended into an exit status: 0 for a
// close with 1000 (the answer to ours, or the server's own), 1 otherwise,
// saying why on stderr.
func report(err error, p *printer, stderr io.Writer) int {
	p.mu.Lock()
	werr := p.err
	p.mu.Unlock()
	if werr != nil {
		fmt.Fprintln(stderr, "wscat: writing standard output:", werr)
		return 1
	}
	var ce *handler.CloseError
	switch {
	case errors.As(err, &ce) && ce.Code == codec.CloseNormal:
		return 0
	case errors.As(err, &ce):
		who := "the server"
		if !ce.Remote {
			who = "wscat"
		}
		if ce.Reason != "" {
			fmt.Fprintf(stderr, "wscat: connection closed by %s with %d: %s\n", who, ce.Code, ce.Reason)
		} else {
			fmt.Fprintf(stderr, "wscat: connection closed by %s with %d\n", who, ce.Code)
		}
	case errors.Is(err, handler.ErrCloseTimeout):
		fmt.Fprintln(stderr, "wscat: the server did not answer the close in time")
	default:
		fmt.Fprintln(stderr, "wscat: connection lost without a close frame (1006):", err)
	}
	return 1
}
