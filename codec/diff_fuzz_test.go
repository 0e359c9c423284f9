package codec

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
)

// Differential fuzzing against net/http (issue 25). A request smuggling or
// response splitting bug is a disagreement between two parsers of the same
// bytes: a proxy in front reads one request (or one Host, one body), the
// server another. net/http's reader is the reference a Go program already
// trusts, so these targets fail whenever wsloop's parser accepts what
// net/http refuses, or reads an accepted message differently.
//
// wsloop may refuse more (it does: obs-fold, duplicate WebSocket fields,
// bodies, fragments, user info...); it must never accept more, except for
// the exceptions listed in requestExceptions, each with its reason.

// netHTTPServerRead reads hdr as net/http's server does before it calls a
// handler: http.ReadRequest, then the checks of (*conn).readRequest and
// (*conn).serve in net/http/server.go. It returns the request and its
// header fields as read (Host included), or why the server would refuse
// it.
func netHTTPServerRead(hdr []byte) (*http.Request, textproto.MIMEHeader, string) {
	rd := bytes.NewReader(hdr)
	br := bufio.NewReader(rd)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, "ReadRequest: " + err.Error()
	}
	if br.Buffered() != 0 || rd.Len() != 0 {
		return nil, nil, "net/http's header ends before wsloop's"
	}
	if req.ProtoMajor != 1 {
		return nil, nil, "505 unsupported protocol version"
	}
	// http.ReadRequest removes Host from req.Header; the server's checks
	// see it, so read the fields again with the same textproto reader.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(hdr)))
	_, _ = tp.ReadLine()
	fields, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, nil, "ReadMIMEHeader: " + err.Error()
	}
	hosts, haveHost := fields["Host"]
	if req.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && req.Method != "CONNECT" {
		return nil, nil, "400 missing required Host header"
	}
	if len(hosts) == 1 && !netHTTPValidHost(hosts[0]) {
		return nil, nil, "400 malformed Host header"
	}
	for k, vs := range fields {
		if !isToken(k) {
			return nil, nil, "400 invalid header name"
		}
		for _, v := range vs {
			for i := 0; i < len(v); i++ {
				if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
					return nil, nil, "400 invalid header value"
				}
			}
		}
	}
	if e := req.Header.Get("Expect"); e != "" && !strings.EqualFold(e, "100-continue") {
		return nil, nil, "417 expectation failed"
	}
	return req, fields, ""
}

// netHTTPValidHost is httpguts.ValidHostHeader (vendored in net/http, not
// importable): any byte of the expressions Host may use.
func netHTTPValidHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!$%&()*+,-.:;=[]'_~", c) >= 0) {
			return false
		}
	}
	return true
}

// requestExceptions are the requests wsloop accepts although net/http's
// server refuses them, each with the reason that is legitimate. Each
// returns true when it covers the refusal why of the request hdr.
var requestExceptions = []struct {
	reason string
	covers func(hdr []byte, why string) bool
}{
	{
		// RFC 9110 §10.1.1: a server "MAY respond with a 417" to an
		// expectation it does not know. An upgrade has no content
		// (ParseRequest refuses any), so no expectation can change
		// where the request ends: there is nothing for a proxy and
		// wsloop to disagree about.
		reason: "an unknown Expect on a request without content",
		covers: func(hdr []byte, why string) bool { return why == "417 expectation failed" },
	},
}

// acceptedByWsloop reports whether ParseRequest takes the request: as an
// upgrade, or as a plain request a server may answer with a page.
func acceptedByWsloop(hdr []byte, r *Request) bool {
	err := ParseRequest(hdr, r)
	return err == nil || err == ErrNotWebSocket
}

// headerHasToken reports whether a comma-separated list in any of vs holds
// tok, compared as net/http users compare (strings.EqualFold on trimmed
// elements).
func headerHasToken(vs []string, tok string) bool {
	for _, v := range vs {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.Trim(t, " \t"), tok) {
				return true
			}
		}
	}
	return false
}

// diffRequest fails t when wsloop accepts hdr and net/http does not, or
// when both accept it and read a different request.
func diffRequest(t *testing.T, data []byte) {
	var s HeaderScanner
	n, err := s.Scan(data)
	if err != nil || n == 0 {
		return
	}
	hdr := data[:n]
	var r Request
	if !acceptedByWsloop(hdr, &r) {
		return
	}
	req, fields, why := netHTTPServerRead(hdr)
	if why != "" {
		for _, e := range requestExceptions {
			if e.covers(hdr, why) {
				return
			}
		}
		t.Fatalf("wsloop accepts what net/http refuses (%s):\n%q", why, hdr)
	}
	// Both accept: the same request, for the same host, with the same
	// credentials of the handshake.
	if req.Method != string(r.Method) || req.RequestURI != string(r.Target) {
		t.Fatalf("request line: net/http %q %q, wsloop %q %q\n%q", req.Method, req.RequestURI, r.Method, r.Target, hdr)
	}
	if req.Host != string(r.Host) {
		t.Fatalf("host: net/http %q, wsloop %q\n%q", req.Host, r.Host, hdr)
	}
	if req.URL.RawQuery != string(r.RawQuery) {
		t.Fatalf("query: net/http %q, wsloop %q\n%q", req.URL.RawQuery, r.RawQuery, hdr)
	}
	path, err := url.PathUnescape(string(r.Path))
	goPath := req.URL.Path
	if goPath == "" {
		goPath = "/"
	}
	if err != nil || path != goPath {
		t.Fatalf("path: net/http %q, wsloop %q (%v)\n%q", req.URL.Path, r.Path, err, hdr)
	}
	for name, got := range map[string][]byte{"Origin": r.Origin, "Sec-Websocket-Key": r.Key, "Sec-Websocket-Version": r.Version} {
		if vs := req.Header[name]; len(vs) > 1 || req.Header.Get(name) != string(got) {
			t.Fatalf("%s: net/http %q, wsloop %q\n%q", name, vs, got, hdr)
		}
	}
	if req.ContentLength != 0 || len(req.TransferEncoding) != 0 {
		t.Fatalf("net/http reads a body (%d, %q) behind a request wsloop takes without one\n%q", req.ContentLength, req.TransferEncoding, hdr)
	}
	if r.upgrade != headerHasToken(req.Header["Upgrade"], "websocket") || r.connection != headerHasToken(req.Header["Connection"], "upgrade") {
		t.Fatalf("upgrade tokens: wsloop %v %v, net/http %q %q\n%q", r.upgrade, r.connection, req.Header["Upgrade"], req.Header["Connection"], hdr)
	}
	var headers int
	r.VisitHeaders(func(k, v []byte) { headers++ })
	var goHeaders int
	for _, vs := range fields {
		goHeaders += len(vs)
	}
	if headers != goHeaders {
		t.Fatalf("%d header lines for wsloop, %d for net/http\n%q", headers, goHeaders, hdr)
	}
}

// requestSeeds are valid upgrades and near misses of every rule, for the
// fuzzer to mutate from.
func requestSeeds() []string {
	ok := sampleRequest
	return []string{
		ok,
		browserRequest,
		strings.ReplaceAll(ok, "\r\n", "\n"),
		strictReq("GET http://server.example.com:80/chat?x=1 HTTP/1.1"),
		strictReq("GET ws://[::1]:80/chat HTTP/1.1"),
		strictReq("GET /chat?q={\"a\":1}|x HTTP/1.1", "X-A:\tb\t\r\n"),
		strictReq("GET /a%20b HTTP/1.1", "Content-Length: 0\r\n"),
		strictReq("GET /chat HTTP/1.9", "Expect: 100-continue\r\n"),
		strictReq("", "Upgrade : websocket\r\n"),
		strictReq("", "Host: evil.example\r\n"),
		strictReq("", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"),
		strictReq("", "X-A: a\x00b\r\n"),
		strictReq("", "Content-Length: 4\r\n") + "abcd",
		strictReq("", "Transfer-Encoding: chunked\r\n") + "0\r\n\r\n",
		strictReq("", "X-A: 1\r\n 2\r\n"),
		strictReq("GET  /chat HTTP/1.1"),
		strictReq("GET /chat#f HTTP/1.1"),
		strictReq("GET http://u@h/ HTTP/1.1"),
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"HEAD /index.html HTTP/1.1\r\nHost: [::1]:8080\r\nAccept: */*\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
	}
}

// FuzzRequestVsNetHTTP: wsloop's request parser never accepts a request
// (an upgrade, or a plain GET for a page) that net/http's server refuses,
// save the listed exceptions, and when both accept they read the same
// method, target, host, path, query, Origin, key and version, no body, the
// same upgrade tokens and the same number of header lines.
//
// Each input is tried twice: as it is, and spliced into a valid upgrade
// at the offset at (so that the fuzzer spends its time near requests
// wsloop accepts, where the differences that matter live).
func FuzzRequestVsNetHTTP(f *testing.F) {
	for i, s := range requestSeeds() {
		f.Add([]byte(s), uint16(0))
		f.Add([]byte(s[strings.Index(s, "\n")+1:]), uint16(len(sampleRequest)-2+i%2))
	}
	for _, s := range []string{"Host: a\r\n", " ", "\t", "\r", "\n", "\x00", ":", "#", "%", "@", "[::1]", "?", "Content-Length: 0\r\n", "Transfer-Encoding: chunked\r\n", "x\r\n y\r\n", "Origin: http://a\r\n"} {
		for _, at := range []int{3, 4, 9, 20, 30, 50, 80, len(sampleRequest) - 2} {
			f.Add([]byte(s), uint16(at))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, at uint16) {
		if len(data) > 1<<13 {
			return
		}
		diffRequest(t, data)
		i := int(at) % (len(sampleRequest) + 1)
		diffRequest(t, []byte(sampleRequest[:i]+string(data)+sampleRequest[i:]))
	})
}

// diffResponse fails t when wsloop's client accepts a 101 that net/http's
// ReadResponse refuses, or reads it differently.
func diffResponse(t *testing.T, data []byte) {
	var s HeaderScanner
	n, err := s.Scan(data)
	if err != nil || n == 0 {
		return
	}
	hdr := data[:n]
	var r Response
	if ParseResponse(hdr, &r) != nil || r.Status != http.StatusSwitchingProtocols {
		return
	}
	proto, err := r.Check(rfcKey, []string{"chat"})
	if err != nil {
		return
	}
	rd := bytes.NewReader(hdr)
	br := bufio.NewReader(rd)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("wsloop accepts a 101 that net/http refuses (%v):\n%q", err, hdr)
	}
	if br.Buffered() != 0 || rd.Len() != 0 {
		t.Fatalf("net/http's header ends before wsloop's:\n%q", hdr)
	}
	if resp.StatusCode != 101 || resp.ProtoMajor != 1 || resp.ProtoMinor != r.Minor {
		t.Fatalf("status: net/http %d HTTP/%d.%d, wsloop %d HTTP/1.%d\n%q", resp.StatusCode, resp.ProtoMajor, resp.ProtoMinor, r.Status, r.Minor, hdr)
	}
	if vs := resp.Header["Sec-Websocket-Accept"]; len(vs) != 1 || strings.TrimSpace(vs[0]) != rfcAccept {
		t.Fatalf("accept: net/http %q\n%q", vs, hdr)
	}
	if !headerHasToken(resp.Header["Upgrade"], "websocket") || !headerHasToken(resp.Header["Connection"], "upgrade") {
		t.Fatalf("upgrade tokens: net/http %q %q\n%q", resp.Header["Upgrade"], resp.Header["Connection"], hdr)
	}
	if got := resp.Header.Values("Sec-Websocket-Protocol"); len(got) > 1 || strings.TrimSpace(resp.Header.Get("Sec-Websocket-Protocol")) != string(proto) {
		t.Fatalf("subprotocol: net/http %q, wsloop %q\n%q", got, proto, hdr)
	}
}

// responseSeeds are 101s and near misses.
func responseSeeds() []string {
	ok := strings.TrimSuffix(valid101, "\r\n")
	return []string{
		ok + "\r\n",
		ok + "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
		strings.ReplaceAll(ok, "\r\n", "\n") + "\n",
		strings.Replace(ok, "101 Switching Protocols", "101", 1) + "\r\n",
		strings.Replace(ok, "101", "0:1", 1) + "\r\n",
		ok + "Content-Length: 0\r\n\r\n",
		ok + "Content-Length: 4\r\n\r\nabcd",
		ok + "Transfer-Encoding: chunked\r\n\r\n",
		ok + "X-A: 1\r\n 2\r\n\r\n",
		strings.Replace(ok, "Upgrade:", "Upgrade :", 1) + "\r\n",
		"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 3\r\n\r\nabc",
	}
}

// FuzzResponseVsNetHTTP: the client's parser and checks never accept a 101
// that net/http's ReadResponse refuses, and when both accept they agree on
// where the header ends, the status, the accept value, the upgrade tokens
// and the subprotocol.
//
// As for requests, each input is also spliced into a valid 101 at at.
func FuzzResponseVsNetHTTP(f *testing.F) {
	for _, s := range responseSeeds() {
		f.Add([]byte(s), uint16(0))
	}
	for _, s := range []string{" ", "\t", "\r", "\n", "\x00", ":", "0", "Content-Length: 0\r\n", "Transfer-Encoding: chunked\r\n", "x\r\n y\r\n", "Sec-WebSocket-Protocol: chat\r\n"} {
		for _, at := range []int{8, 9, 12, 13, 40, 60, len(valid101) - 2} {
			f.Add([]byte(s), uint16(at))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, at uint16) {
		if len(data) > 1<<13 {
			return
		}
		diffResponse(t, data)
		i := int(at) % (len(valid101) + 1)
		diffResponse(t, []byte(valid101[:i]+string(data)+valid101[i:]))
	})
}

// valid101 is the 101 answering rfcKey.
const valid101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + rfcAccept + "\r\n\r\n"
