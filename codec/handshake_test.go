package codec

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/gobwas/httphead"
)

// sampleRequest is the client handshake of RFC 6455 §1.2.
const sampleRequest = "GET /chat HTTP/1.1\r\n" +
	"Host: server.example.com\r\n" +
	"Upgrade: websocket\r\n" +
	"Connection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Origin: http://example.com\r\n" +
	"Sec-WebSocket-Protocol: chat, superchat\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"\r\n"

// TestHeaderScanner covers finding the end of the request header (RFC 9112
// §2.2: CRLF, or bare LF accepted by a recipient), resumption, and bytes
// pipelined after the header.
func TestHeaderScanner(t *testing.T) {
	frame := mframe(true, OpText, 0, []byte("early"))
	for _, c := range []struct {
		name string
		in   string
		want int // header length; 0: incomplete
	}{
		{"CRLF", sampleRequest, len(sampleRequest)},
		{"CRLF + pipelined frame", sampleRequest + string(frame), len(sampleRequest)},
		{"CRLF + pipelined blank lines", sampleRequest + "\r\n\r\n", len(sampleRequest)},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", 24},
		{"mixed CRLF then LF", "GET / HTTP/1.1\r\nHost: a\r\n\n", 26},
		{"mixed LF then CRLF", "GET / HTTP/1.1\nHost: a\n\r\n", 25},
		{"incomplete", "GET / HTTP/1.1\r\nHost: a\r\n", 0},
		{"incomplete, ends in CR", "GET / HTTP/1.1\r\nHost: a\r\n\r", 0},
		{"CR alone does not end a line", "GET / HTTP/1.1\r\r\r\r", 0},
		{"empty", "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var s HeaderScanner
			n, err := s.Scan([]byte(c.in))
			if n != c.want || err != nil {
				t.Fatalf("whole: Scan = %d, %v; want %d", n, err, c.want)
			}
			// Trickled byte by byte: the same answer, found at the byte
			// that ends the header, and each call resumes where the
			// last one stopped.
			var s2 HeaderScanner
			found := 0
			for i := 1; i <= len(c.in); i++ {
				n, err := s2.Scan([]byte(c.in[:i]))
				if err != nil {
					t.Fatal(err)
				}
				if n != 0 {
					found = n
					if n != i {
						t.Fatalf("bytewise: found %d at %d bytes", n, i)
					}
					break
				}
				if s2.scanned != i {
					t.Fatalf("bytewise: scanned %d of %d bytes: not resuming", s2.scanned, i)
				}
			}
			if found != c.want {
				t.Fatalf("bytewise: %d, want %d", found, c.want)
			}
		})
	}
}

// TestHeaderScannerCap: the cap counts the header with its terminator, is
// hit exactly at the boundary, and ignores pipelined bytes after a header
// that fits.
func TestHeaderScannerCap(t *testing.T) {
	header := func(n int) string { // a request header of exactly n bytes
		base := "GET / HTTP/1.1\r\nX: \r\n\r\n"
		return strings.Replace(base, "X: ", "X: "+strings.Repeat("v", n-len(base)), 1)
	}
	const max = 100
	for _, c := range []struct {
		name    string
		in      string
		want    int
		wantErr error
	}{
		{"exactly the cap", header(max), max, nil},
		{"one under", header(max - 1), max - 1, nil},
		{"one over", header(max + 1), 0, ErrHeaderTooLarge},
		{"far over", header(5 * max), 0, ErrHeaderTooLarge},
		{"at the cap + pipelined", header(max) + strings.Repeat("F", 300), max, nil},
		{"under the cap + pipelined past it", header(50) + strings.Repeat("F", 300), 50, nil},
		{"no terminator, cap bytes", strings.Repeat("a", max), 0, ErrHeaderTooLarge},
		{"no terminator, cap-1 bytes", strings.Repeat("a", max-1), 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := HeaderScanner{Max: max}
			n, err := s.Scan([]byte(c.in))
			if n != c.want || err != c.wantErr {
				t.Fatalf("whole: %d %v, want %d %v", n, err, c.want, c.wantErr)
			}
			// Byte by byte: the error comes exactly when the buffer
			// reaches the cap without a terminator.
			s = HeaderScanner{Max: max}
			for i := 1; i <= len(c.in); i++ {
				n, err := s.Scan([]byte(c.in[:i]))
				if err != nil {
					if c.wantErr == nil || i != max {
						t.Fatalf("bytewise: error %v at %d bytes", err, i)
					}
					return
				}
				if n != 0 {
					if n != c.want {
						t.Fatalf("bytewise: %d, want %d", n, c.want)
					}
					return
				}
			}
			if c.want != 0 || c.wantErr != nil {
				t.Fatalf("bytewise: never concluded")
			}
		})
	}
	// The default cap is 8 KiB.
	var s HeaderScanner
	if _, err := s.Scan(make([]byte, DefaultMaxHeaderBytes-1)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Scan(make([]byte, DefaultMaxHeaderBytes)); err != ErrHeaderTooLarge {
		t.Fatalf("at 8 KiB: %v", err)
	}
	// Reset starts over.
	s.Reset()
	if n, err := s.Scan([]byte(sampleRequest)); n != len(sampleRequest) || err != nil {
		t.Fatal(n, err)
	}
}

func mustParse(t *testing.T, req string) *Request {
	t.Helper()
	var r Request
	if err := ParseRequest([]byte(req), &r); err != nil {
		t.Fatalf("ParseRequest: %v\n%s", err, req)
	}
	return &r
}

// TestParseRequestSample parses the RFC 6455 §1.2 request and checks what
// it exposes (§4.2.1).
func TestParseRequestSample(t *testing.T) {
	r := mustParse(t, sampleRequest)
	for _, c := range []struct{ name, got, want string }{
		{"Method", string(r.Method), "GET"},
		{"Target", string(r.Target), "/chat"},
		{"Path", string(r.Path), "/chat"},
		{"RawQuery", string(r.RawQuery), ""},
		{"Host", string(r.Host), "server.example.com"},
		{"Origin", string(r.Origin), "http://example.com"},
		{"Key", string(r.Key), "dGhlIHNhbXBsZSBub25jZQ=="},
		{"Version", string(r.Version), "13"},
		{"HTTP", strconv.Itoa(r.Major) + "." + strconv.Itoa(r.Minor), "1.1"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	var protos []string
	r.Protocols(func(p []byte) bool { protos = append(protos, string(p)); return true })
	if strings.Join(protos, "|") != "chat|superchat" {
		t.Errorf("Protocols = %q", protos)
	}
	var keys []string
	r.VisitHeaders(func(k, v []byte) { keys = append(keys, string(k)) })
	if strings.Join(keys, ",") != "Host,Upgrade,Connection,Sec-WebSocket-Key,Origin,Sec-WebSocket-Protocol,Sec-WebSocket-Version" {
		t.Errorf("VisitHeaders = %q", keys)
	}
	// The fields alias the header.
	hdr := []byte(sampleRequest)
	var r2 Request
	if err := ParseRequest(hdr, &r2); err != nil {
		t.Fatal(err)
	}
	if !within(r2.Key, hdr) || !within(r2.Path, hdr) || !within(r2.Host, hdr) {
		t.Error("fields do not alias the header")
	}
}

// TestParseRequestChecks covers every check of RFC 6455 §4.2.1 (and §4.4
// for the version), each with its own status.
func TestParseRequestChecks(t *testing.T) {
	// req builds a request from the sample by replacing or removing
	// header lines: "Name: value" replaces, "-Name" removes, a line
	// without a match is added.
	req := func(first string, edits ...string) string {
		lines := strings.Split(strings.TrimSuffix(sampleRequest, "\r\n\r\n"), "\r\n")
		if first != "" {
			lines[0] = first
		}
		for _, e := range edits {
			remove := strings.HasPrefix(e, "-")
			name := strings.TrimPrefix(e, "-")
			if i := strings.IndexByte(name, ':'); i >= 0 {
				name = name[:i]
			}
			done := false
			for i := 1; i < len(lines); i++ {
				if strings.HasPrefix(strings.ToLower(lines[i]), strings.ToLower(name)+":") {
					if remove {
						lines = append(lines[:i], lines[i+1:]...)
					} else {
						lines[i] = e
					}
					done = true
					break
				}
			}
			if !done && !remove {
				lines = append(lines, e)
			}
		}
		return strings.Join(lines, "\r\n") + "\r\n\r\n"
	}
	for _, c := range []struct {
		name string
		in   string
		err  *HandshakeError
	}{
		{"sample", req(""), nil},
		{"HTTP/1.2", req("GET /chat HTTP/1.2"), nil},
		{"HTTP/1.9", req("GET /chat HTTP/1.9"), nil},
		{"HTTP/2.0", req("GET /chat HTTP/2.0"), ErrHTTPVersion},
		{"upgrade mixed case", req("", "Upgrade: WebSocket"), nil},
		{"upgrade list", req("", "Upgrade: h2c, websocket"), nil},
		{"connection list", req("", "Connection: keep-alive, Upgrade"), nil},
		{"connection upper", req("", "Connection: UPGRADE"), nil},
		{"header names any case", req("", "-Upgrade", "upgrade: websocket", "-Connection", "CONNECTION: upgrade"), nil},
		{"extra spaces", req("", "Host:    server.example.com   ", "Sec-WebSocket-Version:   13 "), nil},
		{"POST", req("POST /chat HTTP/1.1"), ErrMethod},
		{"lower-case get", req("get /chat HTTP/1.1"), ErrMethod},
		{"HTTP/1.0", req("GET /chat HTTP/1.0"), ErrHTTPVersion},
		{"HTTP/0.9", req("GET /chat HTTP/0.9"), ErrHTTPVersion},
		{"no Host", req("", "-Host"), ErrNoHost},
		{"empty Host", req("", "Host: "), ErrNoHost},
		{"no Upgrade", req("", "-Upgrade"), ErrNotWebSocket},
		{"Upgrade h2c", req("", "Upgrade: h2c"), ErrNotWebSocket},
		{"plain GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", ErrNotWebSocket},
		{"plain GET without Host", "GET / HTTP/1.1\r\n\r\n", ErrNoHost},
		{"no Connection", req("", "-Connection"), ErrConnection},
		{"Connection keep-alive", req("", "Connection: keep-alive"), ErrConnection},
		{"Connection upgrades", req("", "Connection: upgrades"), ErrConnection},
		{"no version", req("", "-Sec-WebSocket-Version"), ErrVersion},
		{"version 8", req("", "Sec-WebSocket-Version: 8"), ErrVersion},
		{"version 13, 8", req("", "Sec-WebSocket-Version: 13, 8"), ErrVersion},
		{"no key", req("", "-Sec-WebSocket-Key"), ErrKey},
		{"key of 15 bytes", req("", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"), ErrKey},
		{"key of 17 bytes", req("", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA="), ErrKey},
		{"key of 18 bytes, 24 chars", req("", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA"), ErrKey},
		{"key not base64", req("", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!="), ErrKey},
		{"key unpadded", req("", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ"), ErrKey},
		{"bad request line", "GET\r\nHost: a\r\n\r\n", ErrBadRequestLine},
		{"bad protocol", "GET / FOO/1.1\r\nHost: a\r\n\r\n", ErrBadRequestLine},
		{"empty", "", ErrBadRequestLine},
		{"header line without colon", req("", "Broken header line"), ErrBadHeaderLine},
		{"header name with space", req("", "Bad Name: x"), ErrBadHeaderLine},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r Request
			err := ParseRequest([]byte(c.in), &r)
			if c.err == nil {
				if err != nil {
					t.Fatalf("%v\n%s", err, c.in)
				}
				return
			}
			var he *HandshakeError
			if !errors.As(err, &he) || he != c.err {
				t.Fatalf("err = %v, want %v\n%s", err, c.err, c.in)
			}
		})
	}
	// The statuses the issue asks for, and the 426 carrying the version
	// (RFC 6455 §4.4).
	for _, c := range []struct {
		err    *HandshakeError
		status int
	}{
		{ErrBadRequestLine, 400}, {ErrBadHeaderLine, 400}, {ErrMethod, 405}, {ErrHTTPVersion, 505}, {ErrNoHost, 400},
		{ErrNotWebSocket, 426}, {ErrConnection, 400}, {ErrVersion, 426}, {ErrKey, 400}, {ErrRequestTooLarge, 431},
	} {
		if c.err.Status != c.status || c.err.Reason == "" {
			t.Errorf("%v: status %d, want %d", c.err, c.err.Status, c.status)
		}
	}
	if v := ErrVersion.Header["Sec-WebSocket-Version"]; len(v) != 1 || v[0] != "13" {
		t.Error("426 without Sec-WebSocket-Version: 13")
	}
	if !ErrNotWebSocket.NotWebSocket || ErrVersion.NotWebSocket {
		t.Error("NotWebSocket flag")
	}
	if ErrMethod.Error() != "websocket: handshake: 405 a WebSocket upgrade must use GET" {
		t.Errorf("Error() = %q", ErrMethod.Error())
	}
}

// TestParseRequestNotWebSocket: a plain GET still exposes what a server
// needs to route it to a page.
func TestParseRequestNotWebSocket(t *testing.T) {
	var r Request
	err := ParseRequest([]byte("GET /index.html?lang=en HTTP/1.1\r\nHost: example.com\r\nAccept: text/html\r\n\r\n"), &r)
	if err != ErrNotWebSocket || string(r.Path) != "/index.html" || string(r.RawQuery) != "lang=en" || string(r.Host) != "example.com" {
		t.Fatalf("%v %q %q %q", err, r.Path, r.RawQuery, r.Host)
	}
}

// TestParseRequestTarget: origin form and absolute form (RFC 9112 §3.2).
func TestParseRequestTarget(t *testing.T) {
	for _, c := range []struct{ target, path, query string }{
		{"/", "/", ""},
		{"/chat", "/chat", ""},
		{"/chat?room=1&x=%20", "/chat", "room=1&x=%20"},
		{"/chat?", "/chat", ""},
		{"/a/b/c?q=1?2", "/a/b/c", "q=1?2"},
		{"http://example.com/chat?x=1", "/chat", "x=1"},
		{"ws://example.com:8080/chat", "/chat", ""},
		{"http://example.com", "/", ""},
		{"http://example.com?x=1", "/", "x=1"},
	} {
		req := strings.Replace(sampleRequest, "GET /chat ", "GET "+c.target+" ", 1)
		r := mustParse(t, req)
		if string(r.Target) != c.target || string(r.Path) != c.path || string(r.RawQuery) != c.query {
			t.Errorf("%q: target %q path %q query %q, want %q %q", c.target, r.Target, r.Path, r.RawQuery, c.path, c.query)
		}
	}
}

// TestParseRequestBareLF: a request with bare LF line ends (RFC 9112 §2.2).
func TestParseRequestBareLF(t *testing.T) {
	req := strings.ReplaceAll(sampleRequest, "\r\n", "\n")
	var s HeaderScanner
	n, err := s.Scan([]byte(req))
	if err != nil || n != len(req) {
		t.Fatal(n, err)
	}
	r := mustParse(t, req)
	if string(r.Key) != "dGhlIHNhbXBsZSBub25jZQ==" || string(r.Host) != "server.example.com" {
		t.Fatalf("%q %q", r.Key, r.Host)
	}
}

// TestRequestProtocolsAndExtensions: subprotocols in the client's order
// over several header lines (RFC 6455 §4.2.1 item 8), early stop, and raw
// extension headers parsed with httphead (item 9).
func TestRequestProtocolsAndExtensions(t *testing.T) {
	req := strings.Replace(sampleRequest, "Sec-WebSocket-Version: 13\r\n",
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v2.chat\r\n"+
			"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo\r\n"+
			"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n", 1)
	r := mustParse(t, req)
	var all []string
	r.Protocols(func(p []byte) bool { all = append(all, string(p)); return true })
	if strings.Join(all, "|") != "chat|superchat|v2.chat" {
		t.Fatalf("Protocols = %q", all)
	}
	var first []string
	r.Protocols(func(p []byte) bool { first = append(first, string(p)); return len(first) < 2 })
	if strings.Join(first, "|") != "chat|superchat" {
		t.Fatalf("Protocols with stop = %q", first)
	}
	var raw []string
	var names []string
	r.ExtensionHeaders(func(v []byte) {
		raw = append(raw, string(v))
		opts, ok := httphead.ParseOptions(v, nil)
		if !ok {
			t.Fatalf("ParseOptions(%q) failed", v)
		}
		for _, o := range opts {
			names = append(names, string(o.Name))
		}
	})
	if len(raw) != 2 || raw[0] != "permessage-deflate; client_max_window_bits, x-foo" {
		t.Fatalf("ExtensionHeaders = %q", raw)
	}
	if strings.Join(names, ",") != "permessage-deflate,x-foo,permessage-deflate" {
		t.Fatalf("options = %q", names)
	}
	// No offers: no calls.
	r = mustParse(t, strings.Replace(sampleRequest, "Sec-WebSocket-Protocol: chat, superchat\r\n", "", 1))
	r.Protocols(func([]byte) bool { t.Fatal("protocol offered"); return false })
	r.ExtensionHeaders(func([]byte) { t.Fatal("extension offered") })
}

// TestAppendAccept: the 101 response of RFC 6455 §4.2.2 with the §1.3
// sample key.
func TestAppendAccept(t *testing.T) {
	var acc [28]byte
	if got := string(AcceptKey(&acc, []byte("dGhlIHNhbXBsZSBub25jZQ=="))); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("AcceptKey = %q", got)
	}
	got := string(AppendAccept([]byte("prev|"), []byte("dGhlIHNhbXBsZSBub25jZQ=="), "", nil, nil))
	want := "prev|HTTP/1.1 101 Switching Protocols\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" +
		"\r\n"
	if got != want {
		t.Fatalf("AppendAccept =\n%q\nwant\n%q", got, want)
	}
	// With a subprotocol, extensions and extra headers: a valid HTTP
	// response that net/http reads back.
	extra := http.Header{"X-Server": {"wsloop"}, "Set-Cookie": {"a=1", "b=2"}}
	resp := AppendAccept(nil, []byte("dGhlIHNhbXBsZSBub25jZQ=="), "chat", []byte("permessage-deflate; server_no_context_takeover"), extra)
	hr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(resp)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if hr.StatusCode != 101 || hr.Header.Get("Upgrade") != "websocket" || hr.Header.Get("Connection") != "Upgrade" ||
		hr.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" || hr.Header.Get("Sec-WebSocket-Protocol") != "chat" ||
		hr.Header.Get("Sec-WebSocket-Extensions") != "permessage-deflate; server_no_context_takeover" ||
		hr.Header.Get("X-Server") != "wsloop" || len(hr.Header.Values("Set-Cookie")) != 2 {
		t.Fatalf("response headers: %v", hr.Header)
	}
	if !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
		t.Fatal("response does not end with a blank line")
	}
}

// TestAppendReject: every rejection is a complete HTTP response with its
// status, its headers, the reason as body, and Connection: close.
func TestAppendReject(t *testing.T) {
	for _, e := range []*HandshakeError{ErrBadRequestLine, ErrBadHeaderLine, ErrMethod, ErrHTTPVersion, ErrNoHost,
		ErrNotWebSocket, ErrConnection, ErrVersion, ErrKey, ErrRequestTooLarge} {
		out := AppendReject([]byte("prev"), e)
		if !bytes.HasPrefix(out, []byte("prevHTTP/1.1 "+strconv.Itoa(e.Status)+" "+http.StatusText(e.Status)+"\r\n")) {
			t.Fatalf("%v: status line of %q", e, out)
		}
		hr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out[4:])), nil)
		if err != nil {
			t.Fatalf("%v: %v", e, err)
		}
		body, _ := io.ReadAll(hr.Body)
		if hr.StatusCode != e.Status || string(body) != e.Reason+"\n" || hr.ContentLength != int64(len(body)) || !hr.Close ||
			hr.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("%v: %d %q %d close=%v %v", e, hr.StatusCode, body, hr.ContentLength, hr.Close, hr.Header)
		}
		// Each header line of the error is there as written (net/http
		// would hide Connection, so look at the bytes).
		for k, vs := range e.Header {
			for _, v := range vs {
				if !bytes.Contains(out, []byte("\r\n"+k+": "+v+"\r\n")) {
					t.Fatalf("%v: no %s: %s line in %q", e, k, v, out)
				}
			}
		}
	}
	// AppendResponse keeps a given Content-Type instead of adding one.
	out := AppendResponse(nil, 200, http.Header{"Content-Type": {"text/html"}}, []byte("<p>hi</p>"))
	if bytes.Count(out, []byte("Content-Type")) != 1 || !bytes.Contains(out, []byte("Content-Type: text/html\r\n")) ||
		!bytes.HasSuffix(out, []byte("\r\n\r\n<p>hi</p>")) {
		t.Fatalf("%q", out)
	}
}
