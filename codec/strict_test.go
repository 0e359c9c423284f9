package codec

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// strictReq is the RFC 6455 §1.2 sample with the request line replaced
// and lines added before the blank line.
func strictReq(first string, lines ...string) string {
	req := sampleRequest
	if first != "" {
		req = first + req[strings.Index(req, "\r\n"):]
	}
	return strings.TrimSuffix(req, "\r\n") + strings.Join(lines, "") + "\r\n"
}

// TestParseRequestStrict: every request of issue 25's table, and the other
// ambiguities of RFC 9112, is refused with its own rejection (400 unless
// said), where the parser used to answer 101 to most of them.
func TestParseRequestStrict(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		err  *HandshakeError
	}{
		// Issue 25's table.
		{"space before colon", strictReq("", "Upgrade : websocket\r\n"), ErrHeaderSpace},
		{"tab before colon", strictReq("", "X-A\t: 1\r\n"), ErrHeaderSpace},
		{"two Host lines", strictReq("", "Host: evil.example\r\n"), ErrDuplicateHost},
		{"two Host lines, same value", strictReq("", "Host: server.example.com\r\n"), ErrDuplicateHost},
		{"Sec-WebSocket-Key twice", strictReq("", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"), ErrDuplicateKey},
		{"Sec-WebSocket-Version twice", strictReq("", "Sec-WebSocket-Version: 13\r\n"), ErrDuplicateVersion},
		{"NUL in a value", strictReq("", "X-A: a\x00b\r\n"), ErrHeaderValue},
		{"Content-Length 4", strictReq("", "Content-Length: 4\r\n") + "\x81\x80abcd", ErrRequestBody},
		{"Transfer-Encoding chunked", strictReq("", "Transfer-Encoding: chunked\r\n"), ErrRequestBody},
		// And the rest of RFC 9112.
		{"obs-fold", strictReq("", "X-A: 1\r\n  continued\r\n"), ErrObsFold},
		{"obs-fold with a tab", strictReq("", "X-A: 1\r\n\tcontinued\r\n"), ErrObsFold},
		{"first header line indented", "GET /chat HTTP/1.1\r\n Host: a\r\n\r\n", ErrObsFold},
		{"control character in a name", strictReq("", "X\x01A: 1\r\n"), ErrBadHeaderLine},
		{"NUL in a name", strictReq("", "X\x00: 1\r\n"), ErrBadHeaderLine},
		{"empty name", strictReq("", ": 1\r\n"), ErrBadHeaderLine},
		{"non-ASCII name", strictReq("", "X-\xc3\xa9: 1\r\n"), ErrBadHeaderLine},
		{"CR in a value", strictReq("", "X-A: a\rb\r\n"), ErrHeaderValue},
		{"bare CR before CRLF", strictReq("", "X-A: a\r\r\n"), ErrHeaderValue},
		{"DEL in a value", strictReq("", "X-A: a\x7fb\r\n"), ErrHeaderValue},
		{"ESC in a value", strictReq("", "X-A: \x1b[31m\r\n"), ErrHeaderValue},
		{"two spaces after the method", strictReq("GET  /chat HTTP/1.1"), ErrBadRequestLine},
		{"two spaces before the version", strictReq("GET /chat  HTTP/1.1"), ErrBadRequestLine},
		{"space after the version", strictReq("GET /chat HTTP/1.1 "), ErrBadRequestLine},
		{"tab as separator", strictReq("GET\t/chat HTTP/1.1"), ErrBadRequestLine},
		{"leading space", strictReq(" GET /chat HTTP/1.1"), ErrBadRequestLine},
		{"method not a token", strictReq("G(T /chat HTTP/1.1"), ErrBadRequestLine},
		{"version lower case", strictReq("GET /chat http/1.1"), ErrBadRequestLine},
		{"version 1.10", strictReq("GET /chat HTTP/1.10"), ErrBadRequestLine},
		{"empty line before the request", "\r\n" + sampleRequest, ErrBadRequestLine},
		{"Origin twice", strictReq("", "Origin: http://evil.example\r\n"), ErrDuplicateOrigin},
		{"Content-Length 0 twice", strictReq("", "Content-Length: 0\r\n", "Content-Length: 0\r\n"), ErrRequestBody},
		{"Content-Length not a number", strictReq("", "Content-Length: 0x10\r\n"), ErrRequestBody},
		{"Content-Length negative", strictReq("", "Content-Length: -1\r\n"), ErrRequestBody},
		{"Transfer-Encoding identity", strictReq("", "Transfer-Encoding: identity\r\n"), ErrRequestBody},
		// Targets.
		{"fragment", strictReq("GET /chat#x HTTP/1.1"), ErrBadTarget},
		{"asterisk form", strictReq("GET * HTTP/1.1"), ErrBadTarget},
		{"authority form", strictReq("GET server.example.com:80 HTTP/1.1"), ErrBadTarget},
		{"relative path", strictReq("GET chat HTTP/1.1"), ErrBadTarget},
		{"control character in the target", strictReq("GET /a\x01b HTTP/1.1"), ErrBadTarget},
		{"DEL in the target", strictReq("GET /a\x7f HTTP/1.1"), ErrBadTarget},
		{"bad escape", strictReq("GET /a%zz HTTP/1.1"), ErrBadTarget},
		{"cut escape", strictReq("GET /a%2 HTTP/1.1"), ErrBadTarget},
		{"user info", strictReq("GET http://user@server.example.com/chat HTTP/1.1"), ErrBadTarget},
		{"empty authority", strictReq("GET http:///chat HTTP/1.1"), ErrBadTarget},
		{"scheme ftp", strictReq("GET ftp://server.example.com/chat HTTP/1.1"), ErrBadTarget},
		{"scheme without //", strictReq("GET http:/chat HTTP/1.1"), ErrBadTarget},
		{"authority with two colons", strictReq("GET http://a:1:2/chat HTTP/1.1"), ErrBadTarget},
		{"bad IPv6 literal", strictReq("GET http://[:::1]/chat HTTP/1.1"), ErrBadTarget},
		{"IPv4 in brackets", strictReq("GET http://[127.0.0.1]/chat HTTP/1.1"), ErrBadTarget},
		{"bad port", strictReq("GET http://a:8o/chat HTTP/1.1"), ErrBadTarget},
		// Host values.
		{"Host with a space", strings.Replace(sampleRequest, "Host: server.example.com", "Host: server example.com", 1), ErrBadHost},
		{"Host with a slash", strings.Replace(sampleRequest, "Host: server.example.com", "Host: server.example.com/x", 1), ErrBadHost},
		{"Host with user info", strings.Replace(sampleRequest, "Host: server.example.com", "Host: u@server.example.com", 1), ErrBadHost},
		{"Host with two colons", strings.Replace(sampleRequest, "Host: server.example.com", "Host: a:1:2", 1), ErrBadHost},
		{"Host IPv6 unclosed", strings.Replace(sampleRequest, "Host: server.example.com", "Host: [::1", 1), ErrBadHost},
		{"Host percent", strings.Replace(sampleRequest, "Host: server.example.com", "Host: a%41", 1), ErrBadHost},
		{"absolute form without Host", strings.Replace(strictReq("GET http://server.example.com/chat HTTP/1.1"), "Host: server.example.com\r\n", "", 1), ErrNoHost},
		{"absolute form with two Hosts", strictReq("GET http://server.example.com/chat HTTP/1.1", "Host: server.example.com\r\n"), ErrDuplicateHost},
		// Versions.
		{"HTTP/2.0", strictReq("GET /chat HTTP/2.0"), ErrHTTPVersion},
		{"HTTP/0.9", strictReq("GET /chat HTTP/0.9"), ErrHTTPVersion},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r Request
			err := ParseRequest([]byte(c.in), &r)
			if err != c.err {
				t.Fatalf("err = %v, want %v\n%q", err, c.err, c.in)
			}
		})
	}
	// Each rejection states its rule and renders as a response.
	for _, e := range []*HandshakeError{ErrBadTarget, ErrHeaderSpace, ErrObsFold, ErrHeaderValue, ErrBadHost,
		ErrDuplicateHost, ErrDuplicateOrigin, ErrDuplicateKey, ErrDuplicateVersion, ErrRequestBody} {
		if e.Status != http.StatusBadRequest || !strings.Contains(e.Reason, "RFC ") {
			t.Errorf("%v: want 400 and the RFC rule", e)
		}
	}
}

// TestParseRequestLenient: what stays accepted, because HTTP allows it and
// clients send it: bare LF, optional whitespace around values, a later
// HTTP/1.x, Content-Length: 0, IP literals, a query with characters
// browsers do not escape, raw UTF-8 in the path (net/http takes it too).
func TestParseRequestLenient(t *testing.T) {
	for _, c := range []struct{ name, in, host string }{
		{"bare LF", strings.ReplaceAll(sampleRequest, "\r\n", "\n"), "server.example.com"},
		{"tabs around a value", strings.Replace(sampleRequest, "Host: server.example.com", "Host:\tserver.example.com\t", 1), "server.example.com"},
		{"no space after the colon", strings.Replace(sampleRequest, "Host: server.example.com", "Host:server.example.com", 1), "server.example.com"},
		{"HTTP/1.2", strictReq("GET /chat HTTP/1.2"), "server.example.com"},
		{"Content-Length 0", strictReq("", "Content-Length: 0\r\n"), "server.example.com"},
		{"Host IPv6 and port", strings.Replace(sampleRequest, "Host: server.example.com", "Host: [::1]:8080", 1), "[::1]:8080"},
		{"Host IPv4-mapped", strings.Replace(sampleRequest, "Host: server.example.com", "Host: [::ffff:127.0.0.1]", 1), "[::ffff:127.0.0.1]"},
		{"Host full IPv6", strings.Replace(sampleRequest, "Host: server.example.com", "Host: [2001:db8:0:0:0:0:2:1]", 1), "[2001:db8:0:0:0:0:2:1]"},
		{"Host IPv4 and port", strings.Replace(sampleRequest, "Host: server.example.com", "Host: 127.0.0.1:9", 1), "127.0.0.1:9"},
		{"Host trailing dot", strings.Replace(sampleRequest, "Host: server.example.com", "Host: server.example.com.", 1), "server.example.com."},
		{"query a browser sends", strictReq(`GET /chat?q={"a":[1,2]}|^` + "`" + ` HTTP/1.1`), "server.example.com"},
		{"UTF-8 in the path", strictReq("GET /caf\xc3\xa9 HTTP/1.1"), "server.example.com"},
		{"escapes", strictReq("GET /a%20b%2F?x=%zz HTTP/1.1"), "server.example.com"},
		{"obs-text in a value", strictReq("", "X-A: caf\xc3\xa9\r\n"), "server.example.com"},
		{"absolute form", strictReq("GET http://server.example.com/chat HTTP/1.1"), "server.example.com"},
		{"absolute form names the host", strictReq("GET wss://Other.Example:8443/chat?x HTTP/1.1"), "Other.Example:8443"},
		{"absolute form IPv6", strictReq("GET http://[::1]:80 HTTP/1.1"), "[::1]:80"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r Request
			if err := ParseRequest([]byte(c.in), &r); err != nil {
				t.Fatalf("%v\n%q", err, c.in)
			}
			if string(r.Host) != c.host {
				t.Fatalf("Host %q, want %q", r.Host, c.host)
			}
		})
	}
}

// TestParseRequestAbsoluteFormHost: the host of an absolute-form target
// replaces the Host header (RFC 9112 §3.2.2), for the Origin check as for
// the application; the header is still required, single and valid.
func TestParseRequestAbsoluteFormHost(t *testing.T) {
	in := strictReq("GET http://other.example:81/room?x=1 HTTP/1.1")
	r := mustParse(t, in)
	if string(r.Host) != "other.example:81" || string(r.Path) != "/room" || string(r.RawQuery) != "x=1" ||
		string(r.Target) != "http://other.example:81/room?x=1" {
		t.Fatalf("host %q path %q query %q target %q", r.Host, r.Path, r.RawQuery, r.Target)
	}
	// The handler still sees the Host line as sent.
	var hosts []string
	r.VisitHeaders(func(k, v []byte) {
		if string(k) == "Host" {
			hosts = append(hosts, string(v))
		}
	})
	if len(hosts) != 1 || hosts[0] != "server.example.com" {
		t.Fatalf("Host lines %q", hosts)
	}
}

// TestParseRequestNotWebSocketStrict: a plain GET gets the same syntax
// checks before it may go to a page: a malformed one is a 400, not a page.
func TestParseRequestNotWebSocketStrict(t *testing.T) {
	for in, want := range map[string]*HandshakeError{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n":                                ErrNotWebSocket,
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n":                     ErrDuplicateHost,
		"GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\n\r\n":                       ErrHeaderSpace,
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc":        ErrRequestBody,
		"GET /#x HTTP/1.1\r\nHost: a\r\n\r\n":                              ErrBadTarget,
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n": ErrRequestBody,
	} {
		var r Request
		if err := ParseRequest([]byte(in), &r); err != want {
			t.Errorf("%q: %v, want %v", in, err, want)
		}
	}
}

// hostile is a header an application might fill from request data: each
// field tries to write a line of its own.
func hostile() http.Header {
	return http.Header{
		"X-Evil":            {"a\r\nSet-Cookie: pwn=1"},
		"X-Lf":              {"b\nSet-Cookie: pwn=2"},
		"X-Nul":             {"c\x00d"},
		"Bad Name":          {"x"},
		"Set-Cookie\r\nX-Y": {"z"},
		"X-Ok":              {"fine\tvalue", "second"},
	}
}

// checkNoForgery parses a response written with hostile() and asserts
// that no forged field reached the wire and the legitimate ones did.
func checkNoForgery(t *testing.T, out []byte) *http.Response {
	t.Helper()
	if bytes.Contains(out, []byte("\nSet-Cookie")) || bytes.Contains(out, []byte("\x00")) || bytes.Contains(out, []byte("Bad Name")) {
		t.Fatalf("forged bytes on the wire: %q", out)
	}
	// Every line of the header ends in CRLF, with no CR or LF inside.
	head := out[:bytes.Index(out, []byte("\r\n\r\n"))+2]
	for _, line := range bytes.SplitAfter(head, []byte("\r\n")) {
		if len(line) == 0 {
			continue
		}
		body := line[:len(line)-2]
		if !bytes.HasSuffix(line, []byte("\r\n")) || bytes.ContainsAny(body, "\r\n") {
			t.Fatalf("line %q", line)
		}
	}
	hr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
	if err != nil {
		t.Fatalf("%v\n%q", err, out)
	}
	if hr.Header.Get("Set-Cookie") != "" {
		t.Fatalf("Set-Cookie forged: %q", hr.Header["Set-Cookie"])
	}
	if got := hr.Header.Get("X-Evil"); got != "a  Set-Cookie: pwn=1" {
		t.Fatalf("X-Evil %q, want its CR and LF as spaces", got)
	}
	if got := hr.Header.Get("X-Lf"); got != "b Set-Cookie: pwn=2" {
		t.Fatalf("X-Lf %q", got)
	}
	if got := hr.Header.Get("X-Nul"); got != "c d" {
		t.Fatalf("X-Nul %q", got)
	}
	if got := hr.Header.Values("X-Ok"); len(got) != 2 || got[0] != "fine\tvalue" || got[1] != "second" {
		t.Fatalf("X-Ok %q", got)
	}
	return hr
}

// TestResponseWritersNoForgery: AppendResponse, AppendReject and
// AppendAccept write an application's header by the rules of issue 25:
// CR, LF, NUL become spaces, invalid names are dropped, the framing and
// handshake fields the writer owns are not duplicated.
func TestResponseWritersNoForgery(t *testing.T) {
	h := hostile()
	h["Content-Length"] = []string{"999"}
	h["Transfer-Encoding"] = []string{"chunked"}
	out := AppendResponse(nil, http.StatusOK, h, []byte("page"))
	hr := checkNoForgery(t, out)
	body, _ := io.ReadAll(hr.Body)
	if string(body) != "page" || bytes.Count(out, []byte("Content-Length")) != 1 || bytes.Contains(out, []byte("chunked")) {
		t.Fatalf("framing: body %q in %q", body, out)
	}

	out = AppendReject(nil, &HandshakeError{Status: http.StatusUnauthorized, Reason: "no\r\nSet-Cookie: r=1", Header: hostile()})
	hr = checkNoForgery(t, out)
	body, _ = io.ReadAll(hr.Body)
	if hr.StatusCode != 401 || string(body) != "no  Set-Cookie: r=1\n" {
		t.Fatalf("%d %q", hr.StatusCode, body)
	}

	h = hostile()
	for _, k := range []string{"Upgrade", "Connection", "Sec-WebSocket-Accept", "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "Content-Length", "Transfer-Encoding"} {
		h[k] = []string{"x"}
	}
	out = AppendAccept(nil, []byte("dGhlIHNhbXBsZSBub25jZQ=="), "chat\r\nSet-Cookie: p=1", nil, h)
	hr = checkNoForgery(t, out)
	if hr.StatusCode != 101 || hr.Header.Get("Upgrade") != "websocket" || len(hr.Header.Values("Connection")) != 1 ||
		hr.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" || hr.Header.Get("Sec-WebSocket-Protocol") != "" ||
		hr.Header.Get("Sec-WebSocket-Extensions") != "" || hr.Header.Get("Content-Length") != "" || hr.Header.Get("Transfer-Encoding") != "" {
		t.Fatalf("101 header %v", hr.Header)
	}
	// The client's parser agrees: a valid 101.
	var r Response
	if err := ParseResponse(out, &r); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Check("dGhlIHNhbXBsZSBub25jZQ==", nil); err != nil {
		t.Fatal(err)
	}
}

// TestAppendResponseStatus: a status that is not a final one is written as
// 500, and 204 and 304 carry no body.
func TestAppendResponseStatus(t *testing.T) {
	for status, want := range map[int]string{101: "HTTP/1.1 500 ", 100: "HTTP/1.1 500 ", 0: "HTTP/1.1 500 ", 1000: "HTTP/1.1 500 ", 299: "HTTP/1.1 299 \r\n", 404: "HTTP/1.1 404 Not Found\r\n"} {
		if out := AppendResponse(nil, status, nil, []byte("x")); !bytes.HasPrefix(out, []byte(want)) {
			t.Errorf("status %d: %q", status, out)
		}
	}
	for _, status := range []int{204, 304} {
		out := AppendResponse(nil, status, nil, []byte("body"))
		if bytes.Contains(out, []byte("Content-Length")) || !bytes.HasSuffix(out, []byte("\r\n\r\n")) {
			t.Errorf("%d: %q", status, out)
		}
	}
}

// TestCheckHeader: the checks report what the writers change, and cost
// nothing on a clean header.
func TestCheckHeader(t *testing.T) {
	clean := http.Header{"Set-Cookie": {"a=1"}, "X-Request-Id": {"abc\tdef"}, "Cache-Control": {"no-store"}}
	if err := CheckResponseHeader(clean); err != nil {
		t.Fatal(err)
	}
	if err := CheckAcceptHeader(clean); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(100, func() { _ = CheckAcceptHeader(clean); _ = CheckResponseHeader(clean) }); a != 0 {
		t.Fatalf("%v allocs", a)
	}
	for _, c := range []struct {
		h             http.Header
		accept, plain string // the problem, "" for none
	}{
		{http.Header{"X-A": {"ok", "a\nb"}}, problemControl, problemControl},
		{http.Header{"X A": {"1"}}, problemName, problemName},
		{http.Header{"": {"1"}}, problemName, problemName},
		{http.Header{"content-length": {"1"}}, problemOwned, problemOwned},
		{http.Header{"Sec-WebSocket-Protocol": {"chat"}}, problemOwned, ""},
		{http.Header{"Connection": {"close"}}, problemOwned, ""},
	} {
		for _, v := range []struct {
			err  error
			want string
		}{{CheckAcceptHeader(c.h), c.accept}, {CheckResponseHeader(c.h), c.plain}} {
			var fe *HeaderFieldError
			switch {
			case v.want == "" && v.err != nil:
				t.Errorf("%v: %v", c.h, v.err)
			case v.want != "" && (!errors.As(v.err, &fe) || fe.Problem != v.want):
				t.Errorf("%v: %v, want %q", c.h, v.err, v.want)
			}
		}
	}
}

// TestParseResponseStrict: the client's parser refuses the response-side
// twins of the request ambiguities, and a 101 that claims a body.
func TestParseResponseStrict(t *testing.T) {
	ok := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + rfcAccept + "\r\n"
	for _, c := range []struct {
		name  string
		in    string
		parse error
		check error
	}{
		{"ok", ok + "\r\n", nil, nil},
		{"no reason", strings.Replace(ok, "101 Switching Protocols", "101", 1) + "\r\n", nil, nil},
		{"Content-Length 0", ok + "Content-Length: 0\r\n\r\n", nil, nil},
		{"colon as a digit", strings.Replace(ok, "101", "0:1", 1) + "\r\n", ErrBadStatusLine, nil},
		{"two spaces", strings.Replace(ok, "HTTP/1.1 101", "HTTP/1.1  101", 1) + "\r\n", ErrBadStatusLine, nil},
		{"four digits", strings.Replace(ok, "101", "1010", 1) + "\r\n", ErrBadStatusLine, nil},
		{"control in reason", strings.Replace(ok, "Switching", "Swi\x00tching", 1) + "\r\n", ErrBadStatusLine, nil},
		{"space before colon", strings.Replace(ok, "Upgrade:", "Upgrade :", 1) + "\r\n", ErrBadResponseHeader, nil},
		{"obs-fold", ok + "X-A: 1\r\n 2\r\n\r\n", ErrBadResponseHeader, nil},
		{"NUL in a value", ok + "X-A: \x00\r\n\r\n", ErrBadResponseHeader, nil},
		{"two Content-Lengths", ok + "Content-Length: 0\r\nContent-Length: 0\r\n\r\n", ErrResponseLength, nil},
		{"bad Content-Length", ok + "Content-Length: 1x\r\n\r\n", ErrResponseLength, nil},
		{"101 with a body", ok + "Content-Length: 4\r\n\r\n", nil, ErrResponseFraming},
		{"101 chunked", ok + "Transfer-Encoding: chunked\r\n\r\n", nil, ErrResponseFraming},
		{"two accepts", ok + "Sec-WebSocket-Accept: " + rfcAccept + "\r\n\r\n", nil, ErrDuplicateAccept},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r Response
			err := ParseResponse([]byte(c.in), &r)
			if err != c.parse {
				t.Fatalf("ParseResponse: %v, want %v", err, c.parse)
			}
			if err != nil {
				return
			}
			if _, err := r.Check(rfcKey, nil); err != c.check {
				t.Fatalf("Check: %v, want %v", err, c.check)
			}
		})
	}
}
