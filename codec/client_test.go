package codec

import (
	"bytes"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// The key and accept value of RFC 6455 §1.3.
const (
	rfcKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	rfcAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

func TestNewKey(t *testing.T) {
	// §1.3's sample nonce is the 16 bytes "the sample nonce".
	var n [16]byte
	copy(n[:], "the sample nonce")
	if got := NewKey(n); got != rfcKey {
		t.Fatalf("NewKey = %q, want %q", got, rfcKey)
	}
}

func TestAppendRequest(t *testing.T) {
	r := &ClientRequest{
		Host:       "example.com:8080",
		Target:     "/chat?room=a",
		Key:        rfcKey,
		Protocols:  []string{"chat", "superchat"},
		Extensions: string(ClientDeflateOffer{ServerNoContextTakeover: true, ClientNoContextTakeover: true, ClientMaxWindowBits: true}.AppendOffer(nil)),
		Header:     http.Header{"Origin": {"http://example.com"}, "Authorization": {"Bearer x"}},
	}
	out := string(AppendRequest(nil, r))
	for _, want := range []string{
		"GET /chat?room=a HTTP/1.1\r\n",
		"Host: example.com:8080\r\n",
		"Upgrade: websocket\r\n",
		"Connection: Upgrade\r\n",
		"Sec-WebSocket-Key: " + rfcKey + "\r\n",
		"Sec-WebSocket-Version: 13\r\n",
		"Sec-WebSocket-Protocol: chat, superchat\r\n",
		"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits\r\n",
		"Origin: http://example.com\r\n",
		"Authorization: Bearer x\r\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("request lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasPrefix(out, "GET ") || !strings.HasSuffix(out, "\r\n\r\n") {
		t.Fatalf("request not framed: %q", out)
	}
	// The server side parses it as a valid upgrade.
	var req Request
	if err := ParseRequest([]byte(out), &req); err != nil {
		t.Fatalf("ParseRequest of the client's request: %v", err)
	}
	if p, ok := NegotiateDeflate(&req, DeflatePolicy{}); !ok || !p.ServerNoContextTakeover || !p.ClientNoContextTakeover {
		t.Fatalf("server-side negotiation of the offer: %+v %v", p, ok)
	}
	// An empty target is "/", and a Host header replaces the Host line.
	out = string(AppendRequest(nil, &ClientRequest{Host: "a", Key: rfcKey, Header: http.Header{"Host": {"b"}}}))
	if !strings.HasPrefix(out, "GET / HTTP/1.1\r\nHost: b\r\n") || strings.Count(out, "Host:") != 1 {
		t.Fatalf("request %q", out)
	}
}

func TestCheckRequestHeader(t *testing.T) {
	for _, h := range []http.Header{
		{"Upgrade": {"x"}},
		{"Sec-Websocket-Key": {"x"}},
		{"sec-websocket-extensions": {"x"}},
		{"X-Bad": {"a\r\nInjected: 1"}},
		{"X-Nul": {"a\x00b"}},
		{"X-Esc": {"\x1b[0m"}},
		{"X-Del": {"a\x7f"}},
		{"Bad Name": {"x"}},
		{"": {"x"}},
	} {
		if err := CheckRequestHeader(h); err == nil {
			t.Errorf("CheckRequestHeader(%v) accepted", h)
		}
	}
	if err := CheckRequestHeader(http.Header{"Cookie": {"a=b"}, "Sec-Websocket-Protocol": {"x"}, "Host": {"h"}, "X-Tab": {"a\tb"}, "X-Utf8": {"caf\xc3\xa9"}}); err != nil {
		t.Fatalf("CheckRequestHeader refused an ordinary header: %v", err)
	}
}

// response builds a 101 answer to rfcKey with extra lines.
func response(lines ...string) []byte {
	return []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + rfcAccept + "\r\n" + strings.Join(lines, "") + "\r\n")
}

func TestResponseCheck(t *testing.T) {
	tests := []struct {
		name   string
		resp   []byte
		protos []string
		want   string // chosen protocol
		err    error
	}{
		{"ok", response(), nil, "", nil},
		{"bare LF and case", []byte("HTTP/1.1 101 OK\nupgrade: WebSocket\nconnection: keep-alive, upgrade\nsec-websocket-accept: " + rfcAccept + "\n\n"), nil, "", nil},
		{"protocol", response("Sec-WebSocket-Protocol: chat\r\n"), []string{"x", "chat"}, "chat", nil},
		{"protocol not offered", response("Sec-WebSocket-Protocol: chat\r\n"), []string{"x"}, "", ErrProtocolNotOffered},
		{"protocol without offer", response("Sec-WebSocket-Protocol: chat\r\n"), nil, "", ErrProtocolNotOffered},
		{"bad accept", []byte("HTTP/1.1 101 S\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"), nil, "", ErrAccept},
		{"no accept", []byte("HTTP/1.1 101 S\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), nil, "", ErrAccept},
		{"no upgrade", []byte("HTTP/1.1 101 S\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + rfcAccept + "\r\n\r\n"), nil, "", ErrNoUpgrade},
		{"no connection", []byte("HTTP/1.1 101 S\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: " + rfcAccept + "\r\n\r\n"), nil, "", ErrNoConnectionUpgrade},
		{"http/1.0", []byte("HTTP/1.0 101 S\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + rfcAccept + "\r\n\r\n"), nil, "", ErrResponseVersion},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r Response
			if err := ParseResponse(tc.resp, &r); err != nil {
				t.Fatalf("ParseResponse: %v", err)
			}
			if r.Status != 101 {
				t.Fatalf("status %d", r.Status)
			}
			p, err := r.Check(rfcKey, tc.protos)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Check err = %v, want %v", err, tc.err)
			}
			if string(p) != tc.want {
				t.Fatalf("protocol %q, want %q", p, tc.want)
			}
		})
	}
}

func TestParseResponseStatuses(t *testing.T) {
	var r Response
	hdr := []byte("HTTP/1.1 302 Found\r\nLocation: wss://elsewhere/\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n")
	if err := ParseResponse(hdr, &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != 302 || string(r.Reason) != "Found" || string(r.Location) != "wss://elsewhere/" || r.ContentLength != 5 {
		t.Fatalf("parsed %+v", r)
	}
	var keys []string
	r.VisitHeaders(func(k, v []byte) { keys = append(keys, string(k)) })
	if !reflect.DeepEqual(keys, []string{"Location", "Content-Length", "X-A"}) {
		t.Fatalf("headers %v", keys)
	}
	for _, bad := range []string{
		"HTTP/1.1 abc OK\r\n\r\n",
		"HTTP/2 101 OK\r\n\r\n",
		"SSH-2.0-OpenSSH\r\n\r\n",
		"HTTP/1.1 101 OK\r\nno colon\r\n\r\n",
		"HTTP/1.1 42 Short\r\n\r\n",
	} {
		if err := ParseResponse([]byte(bad), &r); err == nil {
			t.Errorf("ParseResponse(%q) accepted", bad)
		}
	}
}

func TestNegotiateClientDeflate(t *testing.T) {
	cheap := ClientDeflateOffer{ServerNoContextTakeover: true, ClientNoContextTakeover: true, ClientMaxWindowBits: true}
	tests := []struct {
		name  string
		offer ClientDeflateOffer
		lines []string
		want  ClientDeflateParams
		ok    bool
		err   bool
	}{
		{"none", cheap, nil, ClientDeflateParams{}, false, false},
		{"accepted", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"},
			ClientDeflateParams{ServerNoContextTakeover: true, ClientNoContextTakeover: true}, true, false},
		{"client takeover forced by the offer", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"},
			ClientDeflateParams{ServerNoContextTakeover: true, ClientNoContextTakeover: true}, true, false},
		{"window bits", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate;server_no_context_takeover;client_max_window_bits=10;server_max_window_bits=12\r\n"},
			ClientDeflateParams{ServerNoContextTakeover: true, ClientNoContextTakeover: true, ClientMaxWindowBits: 10, ServerMaxWindowBits: 12}, true, false},
		{"server takeover not agreed", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate\r\n"}, ClientDeflateParams{}, false, true},
		{"server takeover allowed", ClientDeflateOffer{}, []string{"Sec-WebSocket-Extensions: permessage-deflate\r\n"}, ClientDeflateParams{}, true, false},
		{"client bits not offered", ClientDeflateOffer{}, []string{"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=9\r\n"}, ClientDeflateParams{}, false, true},
		{"client bits without value", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits\r\n"}, ClientDeflateParams{}, false, true},
		{"bad window", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_max_window_bits=7\r\n"}, ClientDeflateParams{}, false, true},
		{"unknown parameter", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; x=1\r\n"}, ClientDeflateParams{}, false, true},
		{"repeated parameter", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_no_context_takeover\r\n"}, ClientDeflateParams{}, false, true},
		{"accepted twice", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover\r\n"}, ClientDeflateParams{}, false, true},
		{"accepted twice in two headers", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n", "Sec-WebSocket-Extensions: permessage-deflate\r\n"}, ClientDeflateParams{}, false, true},
		{"other extension", cheap, []string{"Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n"}, ClientDeflateParams{}, false, true},
		{"value on a flag", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover=1\r\n"}, ClientDeflateParams{}, false, true},
		{"malformed", cheap, []string{"Sec-WebSocket-Extensions: permessage-deflate;;=\r\n"}, ClientDeflateParams{}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r Response
			if err := ParseResponse(response(tc.lines...), &r); err != nil {
				t.Fatal(err)
			}
			p, ok, err := NegotiateClientDeflate(&r, tc.offer)
			if (err != nil) != tc.err || ok != tc.ok || p != tc.want {
				t.Fatalf("got %+v %v %v, want %+v %v err=%v", p, ok, err, tc.want, tc.ok, tc.err)
			}
		})
	}
	if l := (ClientDeflateParams{ClientMaxWindowBits: 9}).CompressLimit(); l != 512 {
		t.Fatalf("CompressLimit = %d", l)
	}
	if l := (ClientDeflateParams{ClientMaxWindowBits: 15}).CompressLimit(); l != 0 {
		t.Fatalf("CompressLimit = %d", l)
	}
}

// What the server side answers, the client side accepts: the two
// negotiations agree for every offer the client makes.
func TestClientServerDeflateAgree(t *testing.T) {
	for _, o := range []ClientDeflateOffer{
		{}, {ServerNoContextTakeover: true}, {ClientNoContextTakeover: true},
		{ServerNoContextTakeover: true, ClientNoContextTakeover: true, ClientMaxWindowBits: true},
	} {
		for _, pol := range []DeflatePolicy{{}, {ServerContextTakeover: true, ClientContextTakeover: true}} {
			req := AppendRequest(nil, &ClientRequest{Host: "h", Key: rfcKey, Extensions: string(o.AppendOffer(nil))})
			var r Request
			if err := ParseRequest(req, &r); err != nil {
				t.Fatal(err)
			}
			sp, ok := NegotiateDeflate(&r, pol)
			if !ok {
				t.Fatalf("server declined %+v", o)
			}
			resp := AppendAccept(nil, r.Key, "", sp.AppendResponse(nil), nil)
			var cr Response
			if err := ParseResponse(resp, &cr); err != nil {
				t.Fatal(err)
			}
			if _, err := cr.Check(rfcKey, nil); err != nil {
				t.Fatal(err)
			}
			cp, ok, err := NegotiateClientDeflate(&cr, o)
			if err != nil || !ok {
				t.Fatalf("offer %+v policy %+v: client refused %q: %v", o, pol, resp, err)
			}
			if cp.ServerNoContextTakeover != sp.ServerNoContextTakeover || cp.ClientNoContextTakeover != sp.ClientNoContextTakeover {
				t.Fatalf("offer %+v policy %+v: client %+v, server %+v", o, pol, cp, sp)
			}
		}
	}
}

func TestParseResponseAllocs(t *testing.T) {
	hdr := response("Sec-WebSocket-Protocol: chat\r\n", "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n")
	var r Response
	if a := testing.AllocsPerRun(100, func() { _ = ParseResponse(hdr, &r) }); a != 0 {
		t.Fatalf("ParseResponse allocates %v times", a)
	}
}

// FuzzResponse: arbitrary bytes never panic the response parser or the
// checks after it; parsing allocates nothing; a response that passes the
// checks really is a 101 with the right accept value, and a deflate
// negotiation never both accepts and fails.
func FuzzResponse(f *testing.F) {
	f.Add(response(), uint16(0))
	f.Add(response("Sec-WebSocket-Protocol: chat\r\n", "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits=9\r\n"), uint16(0))
	f.Add([]byte("HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 3\r\n\r\nabc"), uint16(64))
	f.Add([]byte("HTTP/1.1 101 OK\nUpgrade: websocket\nConnection: upgrade\nSec-WebSocket-Accept: x\n\n\x81\x00"), uint16(0))
	f.Add([]byte("HTTP/1.0 403 Forbidden\r\n\r\nno"), uint16(10))
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		if len(data) > 1<<14 {
			return
		}
		s := HeaderScanner{Max: int(max)}
		n, err := s.Scan(data)
		if err != nil || n == 0 {
			var r Response
			_ = ParseResponse(data, &r) // must not panic without its blank line either
			return
		}
		hdr := data[:n]
		var r Response
		perr := ParseResponse(hdr, &r)
		for _, b := range [][]byte{r.Reason, r.Accept, r.Location} {
			if len(b) > 0 && !within(b, hdr) {
				t.Fatalf("field %q outside the header", b)
			}
		}
		if allocs := testing.AllocsPerRun(1, func() { _ = ParseResponse(hdr, &r) }); allocs != 0 {
			t.Fatalf("ParseResponse allocated %v times", allocs)
		}
		if perr != nil {
			var re *InvalidResponseError
			if !errors.As(perr, &re) {
				t.Fatalf("ParseResponse error %T %v", perr, perr)
			}
			return
		}
		r.VisitHeaders(func(k, v []byte) {})
		r.Extensions(func([]byte) {})
		p, err := r.Check(rfcKey, []string{"chat"})
		if err == nil {
			if !bytes.Contains(hdr, []byte(rfcAccept)) {
				t.Fatalf("accepted without the accept value: %q", hdr)
			}
			if p != nil && string(p) != "chat" {
				t.Fatalf("accepted protocol %q", p)
			}
		}
		for _, o := range []ClientDeflateOffer{{}, {ServerNoContextTakeover: true, ClientNoContextTakeover: true, ClientMaxWindowBits: true}} {
			dp, ok, err := NegotiateClientDeflate(&r, o)
			if err != nil && ok {
				t.Fatalf("deflate accepted and failed: %+v %v", dp, err)
			}
			if ok && (dp.ClientMaxWindowBits != 0 && (dp.ClientMaxWindowBits < 8 || dp.ClientMaxWindowBits > 15) || !o.ClientMaxWindowBits && dp.ClientMaxWindowBits != 0) {
				t.Fatalf("accepted window bits %+v for offer %+v", dp, o)
			}
		}
	})
}

// FuzzServerFrames: a client's decoder (Client mode) on arbitrary bytes, as
// a server would send them. Besides FuzzDecoder's invariants (no panic,
// same result however the input is split, no allocation), it checks the
// client-side rules: a masked frame is never accepted (RFC 6455 §5.1), so
// every payload delivered came from an unmasked frame, and RSV bits are
// accepted only with compression on.
func FuzzServerFrames(f *testing.F) {
	sv := func(fin bool, op OpCode, rsv byte, p string) []byte { return AppendFrame(nil, fin, op, rsv, []byte(p)) }
	f.Add(cat(sv(true, OpText, 0, "hello"), sv(true, OpPing, 0, "p"), sv(true, OpClose, 0, "\x03\xe8")), false, int64(3))
	f.Add(cat(sv(false, OpBinary, 0, "ab"), sv(true, OpPong, 0, ""), sv(true, OpContinuation, 0, "c")), false, int64(1))
	f.Add(AppendMaskedFrame(nil, true, OpText, 0, testMask, []byte("masked")), false, int64(2))
	f.Add(sv(true, OpText, 0x40, "\xf2H\xcd\xc9\xc9\x07\x00"), true, int64(5))
	f.Add(sv(true, OpText, 0x20, "x"), true, int64(4))
	f.Add(sv(true, OpText, 0, "\xc0\xaf"), false, int64(7))
	f.Fuzz(func(t *testing.T, data []byte, compression bool, seed int64) {
		if len(data) > 1<<16 {
			return
		}
		dc := Decoder{Client: true, Compression: compression, MaxMessageSize: 1 << 12}
		whole, _, errW := fuzzRun(t, dc, data, nil)
		cuts := []int{}
		for i := 1; i < len(data) && i < 64; i += 1 + int(uint64(seed)%7) {
			cuts = append(cuts, i)
		}
		got, _, err := fuzzRun(t, dc, data, cuts)
		if err != errW || !reflect.DeepEqual(got, whole) && !(len(got) == 0 && len(whole) == 0) {
			t.Fatalf("split at %v: %s %v; whole %s %v", cuts, recsString(got), err, recsString(whole), errW)
		}
		// Walk the frames the decoder accepted: none may be masked,
		// and none may carry RSV2 or RSV3.
		p := data
		var d Decoder = dc
		for len(p) >= 2 {
			b0, b1 := p[0], p[1]
			n, ev, err := d.Decode(append([]byte(nil), p...))
			if err != nil {
				op, rsv := OpCode(b0&0xF), b0&0x70
				rsvOK := rsv == 0 || rsv == 0x40 && compression && op != OpContinuation && !op.IsControl()
				if b1&0x80 != 0 && !op.IsReserved() && rsvOK && !errors.Is(err, ErrMaskedFrame) {
					t.Fatalf("masked frame % x failed with %v, want %v", p[:2], err, ErrMaskedFrame)
				}
				break
			}
			if n == 0 {
				break
			}
			if b1&0x80 != 0 && n >= 2 {
				t.Fatalf("masked server frame accepted: % x", p[:2])
			}
			if b0&0x30 != 0 {
				t.Fatalf("RSV2/RSV3 accepted: % x", p[:2])
			}
			p = p[n:]
			if ev.Kind == EventNone {
				break
			}
		}
	})
}

func TestMaskFrame(t *testing.T) {
	mask := [4]byte{9, 8, 7, 6}
	for _, n := range []int{0, 5, 125, 126, 300, 70000} {
		payload := bytes.Repeat([]byte{'a', 'b', 'c'}, n)[:n]
		for _, rsv := range []byte{0, 0x40} {
			plain := AppendFrame(nil, n%2 == 0, OpBinary, rsv, payload)
			keep := append([]byte(nil), plain...)
			got := MaskFrame([]byte("x"), plain, mask)
			want := AppendMaskedFrame([]byte("x"), n%2 == 0, OpBinary, rsv, mask, payload)
			if !bytes.Equal(got, want) {
				t.Fatalf("n=%d rsv=%#x: MaskFrame differs from AppendMaskedFrame", n, rsv)
			}
			if !bytes.Equal(plain, keep) {
				t.Fatalf("n=%d: MaskFrame modified its input", n)
			}
		}
	}
}

// isToken against RFC 9110 §5.6.2's grammar, octet by octet:
// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
// "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA.
func TestIsToken(t *testing.T) {
	tchar := func(c byte) bool {
		return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
	}
	for c := 0; c < 256; c++ {
		s := "a" + string([]byte{byte(c)}) + "b"
		if got, want := isToken(s), tchar(byte(c)); got != want {
			t.Errorf("isToken(%q) = %v, want %v (octet 0x%02X)", s, got, want, c)
		}
	}
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"", false},
		{"chat.v2", true},
		{"mqtt", true},
		{"x-custom+json", true},
		{"two words", false},
		{"a,b", false},
		{"ünïcode", false},
	} {
		if got := isToken(tc.s); got != tc.want {
			t.Errorf("isToken(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}
