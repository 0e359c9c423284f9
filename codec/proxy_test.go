package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/netip"
	"strings"
	"testing"
)

// v2 builds a version 2 header from its parts: command, family byte,
// address block and TLVs, with the length computed.
func v2(cmd, fam byte, block []byte) []byte {
	b := append([]byte(nil), proxyV2Sig...)
	b = append(b, 0x20|cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(block)))
	return append(b, block...)
}

// withCRC appends a CRC32C TLV to a version 2 header and fills it in.
func withCRC(h []byte) []byte {
	h = append(h, ProxyTLVCRC32C, 0, 4, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(h[14:16], uint16(len(h)-16))
	binary.BigEndian.PutUint32(h[len(h)-4:], crc32.Checksum(h, crc32.MakeTable(crc32.Castagnoli)))
	return h
}

var (
	ap   = netip.MustParseAddrPort
	ipv4 = []byte{192, 0, 2, 1, 198, 51, 100, 7, 0xDC, 0x04, 0x01, 0xBB} // 192.0.2.1:56324 -> 198.51.100.7:443
)

func ipv6Block() []byte {
	s, d := netip.MustParseAddr("2001:db8::1").As16(), netip.MustParseAddr("2001:db8::2").As16()
	b := append(append([]byte(nil), s[:]...), d[:]...)
	return append(b, 0xDC, 0x04, 0x01, 0xBB)
}

// TestParseProxyHeaderValid parses each valid form of both versions
// (proxy-protocol.txt §2.1, §2.2) with a request pipelined behind it, which
// must not be consumed, and checks every field.
func TestParseProxyHeaderValid(t *testing.T) {
	tlvs := AppendProxyTLV(AppendProxyTLV(nil, ProxyTLVAuthority, []byte("chat.example.com")), 0xEA, []byte("vpce-0123"))
	cases := []struct {
		name     string
		in       []byte
		want     ProxyHeader
		proxied  bool
		auth     string
		tlvCount int
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"),
			ProxyHeader{Version: 1, Command: ProxyRelay, Family: ProxyTCP4, Source: ap("192.0.2.1:56324"), Destination: ap("198.51.100.7:443")}, true, "", 0},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 2001:DB8:0:0:0:0:0:2 56324 443\r\n"),
			ProxyHeader{Version: 1, Command: ProxyRelay, Family: ProxyTCP6, Source: ap("[2001:db8::1]:56324"), Destination: ap("[2001:db8::2]:443")}, true, "", 0},
		{"v1 tcp6 v4-mapped", []byte("PROXY TCP6 ::ffff:192.0.2.1 ::1 0 65535\r\n"),
			ProxyHeader{Version: 1, Command: ProxyRelay, Family: ProxyTCP6, Source: ap("[::ffff:192.0.2.1]:0"), Destination: ap("[::1]:65535")}, true, "", 0},
		{"v1 longest", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
			ProxyHeader{Version: 1, Command: ProxyRelay, Family: ProxyTCP6,
				Source: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), Destination: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")}, true, "", 0},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), ProxyHeader{Version: 1, Command: ProxyLocal, Family: ProxyUnspec}, false, "", 0},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff:f::f ffff::1 65535 65535\r\n"), ProxyHeader{Version: 1, Command: ProxyLocal, Family: ProxyUnspec}, false, "", 0},
		{"v2 tcp4", v2(1, 0x11, ipv4),
			ProxyHeader{Version: 2, Command: ProxyRelay, Family: ProxyTCP4, Source: ap("192.0.2.1:56324"), Destination: ap("198.51.100.7:443")}, true, "", 0},
		{"v2 udp4", v2(1, 0x12, ipv4),
			ProxyHeader{Version: 2, Command: ProxyRelay, Family: ProxyUDP4, Source: ap("192.0.2.1:56324"), Destination: ap("198.51.100.7:443")}, true, "", 0},
		{"v2 tcp6", v2(1, 0x21, ipv6Block()),
			ProxyHeader{Version: 2, Command: ProxyRelay, Family: ProxyTCP6, Source: ap("[2001:db8::1]:56324"), Destination: ap("[2001:db8::2]:443")}, true, "", 0},
		{"v2 tcp4 with TLVs", v2(1, 0x11, append(append([]byte(nil), ipv4...), tlvs...)),
			ProxyHeader{Version: 2, Command: ProxyRelay, Family: ProxyTCP4, Source: ap("192.0.2.1:56324"), Destination: ap("198.51.100.7:443"), TLVs: tlvs}, true, "chat.example.com", 2},
		{"v2 local, block ignored", v2(0, 0x11, ipv4), ProxyHeader{Version: 2, Command: ProxyLocal, Family: ProxyTCP4}, false, "", 0},
		{"v2 local, unspec, empty", v2(0, 0x00, nil), ProxyHeader{Version: 2, Command: ProxyLocal, Family: ProxyUnspec}, false, "", 0},
		{"v2 proxy, unspec", v2(1, 0x00, []byte{1, 2, 3}), ProxyHeader{Version: 2, Command: ProxyRelay, Family: ProxyUnspec}, false, "", 0},
		{"v2 unix stream", v2(1, 0x31, make([]byte, 216)), ProxyHeader{Version: 2, Command: ProxyRelay, Family: ProxyUnixStream}, false, "", 0},
		{"v2 noop TLV of length 0", v2(1, 0x11, append(append([]byte(nil), ipv4...), ProxyTLVNoop, 0, 0)),
			ProxyHeader{Version: 2, Command: ProxyRelay, Family: ProxyTCP4, Source: ap("192.0.2.1:56324"), Destination: ap("198.51.100.7:443"), TLVs: []byte{ProxyTLVNoop, 0, 0}}, true, "", 1},
	}
	const pipelined = "GET / HTTP/1.1\r\n"
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := append(append([]byte(nil), c.in...), pipelined...)
			var h ProxyHeader
			n, err := ParseProxyHeader(in, 0, &h)
			if err != nil || n != len(c.in) {
				t.Fatalf("ParseProxyHeader = %d, %v; want %d, nil", n, err, len(c.in))
			}
			if h.Version != c.want.Version || h.Command != c.want.Command || h.Family != c.want.Family ||
				h.Source != c.want.Source || h.Destination != c.want.Destination || !bytes.Equal(h.TLVs, c.want.TLVs) {
				t.Errorf("got %+v\nwant %+v", h, c.want)
			}
			if h.Proxied() != c.proxied {
				t.Errorf("Proxied() = %v, want %v", h.Proxied(), c.proxied)
			}
			if got := h.Authority(); got != c.auth {
				t.Errorf("Authority() = %q, want %q", got, c.auth)
			}
			count := 0
			h.VisitTLVs(func(uint8, []byte) bool { count++; return true })
			if count != c.tlvCount {
				t.Errorf("VisitTLVs saw %d TLVs, want %d", count, c.tlvCount)
			}
			// Every beginning of the header is incomplete, never an error:
			// a header that arrives in pieces is waited for.
			for k := 0; k < len(c.in); k++ {
				if n, err := ParseProxyHeader(c.in[:k], 0, &h); n != 0 || err != nil {
					t.Fatalf("first %d bytes: %d, %v; want 0, nil", k, n, err)
				}
			}
		})
	}
}

// TestParseProxyHeaderInvalid checks that each way a header can be wrong is
// refused, and refused as early as the bytes allow: the trailing part of
// each input is never needed to see the fault.
func TestParseProxyHeaderInvalid(t *testing.T) {
	badCRC := withCRC(v2(1, 0x11, append([]byte(nil), ipv4...)))
	badCRC[20] ^= 1 // a source address byte changed after the checksum
	cases := []struct {
		name string
		in   []byte
		want error // nil: any malformed-header error
	}{
		{"http request", []byte("GET / HTTP/1.1\r\n"), ErrNoProxyHeader},
		{"POST", []byte("POST"), ErrNoProxyHeader},
		{"v1 lower case", []byte("proxy TCP4"), ErrNoProxyHeader},
		{"v1 two spaces", []byte("PROXY  TCP4"), nil},
		{"v1 udp", []byte("PROXY UDP4 "), nil},
		{"v1 bare LF", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 1 2\n"), nil},
		{"v1 CR in the middle", []byte("PROXY TCP4 192.0.2.1\r 198"), nil},
		{"v1 letter in an address", []byte("PROXY TCP4 192.0.2.x"), nil},
		{"v1 tab", []byte("PROXY TCP4\t"), nil},
		{"v1 leading zero in IPv4", []byte("PROXY TCP4 192.0.2.01 198.51.100.7 1 2\r\n"), nil},
		{"v1 leading zero in port", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 01 2\r\n"), nil},
		{"v1 port too big", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 65536 2\r\n"), nil},
		{"v1 six fields", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 1 2 3\r\n"), nil},
		{"v1 four fields", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 1\r\n"), nil},
		{"v1 trailing space", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 1 2 \r\n"), nil},
		{"v1 IPv6 on TCP4", []byte("PROXY TCP4 ::1 ::1 1 2\r\n"), nil},
		{"v1 IPv4 on TCP6", []byte("PROXY TCP6 192.0.2.1 198.51.100.7 1 2\r\n"), nil},
		{"v1 empty after PROXY", []byte("PROXY \r\n"), nil},
		{"v1 no CRLF in 107 bytes", []byte("PROXY UNKNOWN " + strings.Repeat("a", 93)), ErrProxyTooLarge},
		{"v2 bad signature", []byte("\r\n\r\n\x00\r\nQUIX"), ErrNoProxyHeader},
		{"v2 version 1", []byte("\r\n\r\n\x00\r\nQUIT\n\x11"), nil},
		{"v2 command 2", []byte("\r\n\r\n\x00\r\nQUIT\n\x22"), nil},
		{"v2 family 4", []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x41"), nil},
		{"v2 transport 3", []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x13"), nil},
		{"v2 over the limit", []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x20\x00"), ErrProxyTooLarge},
		{"v2 IPv4 block too short", v2(1, 0x11, ipv4[:11]), nil},
		{"v2 IPv6 block too short", v2(1, 0x21, ipv6Block()[:35]), nil},
		{"v2 TLV cut in its header", v2(1, 0x11, append(append([]byte(nil), ipv4...), 0x02, 0)), nil},
		{"v2 TLV longer than the header", v2(1, 0x11, append(append([]byte(nil), ipv4...), 0x02, 0, 5, 'a')), nil},
		{"v2 CRC32C mismatch", badCRC, nil},
		{"v2 CRC32C of 3 bytes", v2(1, 0x11, append(append([]byte(nil), ipv4...), ProxyTLVCRC32C, 0, 3, 1, 2, 3)), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h ProxyHeader
			n, err := ParseProxyHeader(c.in, 64, &h)
			var pe *ProxyError
			if n != 0 || !errors.As(err, &pe) {
				t.Fatalf("ParseProxyHeader = %d, %v; want 0 and a *ProxyError", n, err)
			}
			if c.want != nil && err != c.want {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if c.want == nil && (err == ErrNoProxyHeader || err == ErrProxyTooLarge) {
				t.Fatalf("err = %v, want a malformed-header error", err)
			}
		})
	}
}

// TestProxyCRC32C: a header with a correct checksum parses, and the same
// header with one bit changed anywhere outside the checksum fails.
func TestProxyCRC32C(t *testing.T) {
	h := withCRC(v2(1, 0x11, AppendProxyTLV(append([]byte(nil), ipv4...), ProxyTLVAuthority, []byte("a.example"))))
	var ph ProxyHeader
	if n, err := ParseProxyHeader(h, 0, &ph); err != nil || n != len(h) {
		t.Fatalf("valid checksum: %d, %v", n, err)
	}
	if ph.Authority() != "a.example" {
		t.Errorf("Authority() = %q", ph.Authority())
	}
	for i := 16; i < len(h)-4; i++ {
		if i >= len(h)-7 && i < len(h)-4 {
			continue // the checksum TLV's own type and length: another fault
		}
		bad := bytes.Clone(h)
		bad[i] ^= 0x40
		if _, err := ParseProxyHeader(bad, 0, &ph); err == nil {
			t.Fatalf("byte %d changed: accepted", i)
		}
	}
}

// TestAppendProxyHeaderRoundTrip encodes headers of both versions and
// families and parses them back.
func TestAppendProxyHeaderRoundTrip(t *testing.T) {
	tlvs := AppendProxyTLV(nil, ProxyTLVAuthority, []byte("sni.example"))
	for _, h := range []ProxyHeader{
		{Version: 1, Command: ProxyRelay, Source: ap("127.0.0.9:40000"), Destination: ap("127.0.0.1:80")},
		{Version: 1, Command: ProxyRelay, Source: ap("[2001:db8::9]:1"), Destination: ap("[::1]:2")},
		{Version: 1},
		{Version: 2, Command: ProxyRelay, Source: ap("10.1.2.3:5"), Destination: ap("10.0.0.1:443"), TLVs: tlvs},
		{Version: 2, Command: ProxyRelay, Source: ap("[2001:db8::9]:1"), Destination: ap("[2001:db8::1]:443")},
		{Version: 2, Command: ProxyRelay, Source: ap("10.1.2.3:5"), Destination: ap("[2001:db8::1]:443")}, // mixed: sent as IPv6
		{Version: 2, Command: ProxyLocal},
	} {
		b := AppendProxyHeader([]byte("x"), &h)[1:]
		var got ProxyHeader
		n, err := ParseProxyHeader(b, 0, &got)
		if err != nil || n != len(b) {
			t.Fatalf("%+v: encoded %q, parsed %d, %v", h, b, n, err)
		}
		if got.Version != h.Version || got.Proxied() != h.Proxied() || !bytes.Equal(got.TLVs, h.TLVs) {
			t.Errorf("%+v: parsed back as %+v", h, got)
		}
		if h.Proxied() && (got.Source.Addr().Unmap() != h.Source.Addr().Unmap() || got.Source.Port() != h.Source.Port() ||
			got.Destination.Addr().Unmap() != h.Destination.Addr().Unmap() || got.Destination.Port() != h.Destination.Port()) {
			t.Errorf("%+v: addresses parsed back as %v -> %v", h, got.Source, got.Destination)
		}
	}
}

// TestHasProxySignature tells a header's beginning from a request's.
func TestHasProxySignature(t *testing.T) {
	for in, want := range map[string]bool{
		"PROXY TCP4 1.2.3.4":           true,
		"PROXY":                        false, // not whole yet
		"\r\n\r\n\x00\r\nQUIT\n\x21":   true,
		"GET / HTTP/1.1\r\n":           false,
		"\x16\x03\x01\x02\x00\x01\x00": false, // a TLS ClientHello
	} {
		if got := HasProxySignature([]byte(in)); got != want {
			t.Errorf("HasProxySignature(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestParseProxyHeaderAllocs: a whole version 2 header and a version 1
// IPv4 line are parsed without allocating.
func TestParseProxyHeaderAllocs(t *testing.T) {
	v1 := []byte("PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n")
	v2h := v2(1, 0x11, AppendProxyTLV(append([]byte(nil), ipv4...), ProxyTLVAuthority, []byte("a.example")))
	var h ProxyHeader
	for _, in := range [][]byte{v1, v2h} {
		if a := testing.AllocsPerRun(100, func() { _, _ = ParseProxyHeader(in, 0, &h) }); a != 0 {
			t.Errorf("%q: %v allocs per parse", in[:8], a)
		}
	}
}

// FuzzProxyHeader: arbitrary bytes never panic the parser nor make it
// claim more than its input; the verdict does not depend on how the bytes
// were split (a header's every beginning is "incomplete", never an error,
// and nothing that fails can succeed with more or fewer bytes); and what
// parses re-encodes to the same header.
func FuzzProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\nGET /"), uint16(0))
	f.Add([]byte("PROXY TCP6 2001:db8::1 ::1 1 2\r\n"), uint16(0))
	f.Add([]byte("PROXY UNKNOWN whatever\r\n"), uint16(0))
	f.Add(v2(1, 0x11, ipv4), uint16(0))
	f.Add(v2(1, 0x21, AppendProxyTLV(ipv6Block(), ProxyTLVAuthority, []byte("x.example"))), uint16(64))
	f.Add(withCRC(v2(1, 0x11, append([]byte(nil), ipv4...))), uint16(0))
	f.Add(v2(0, 0x00, nil), uint16(16))
	f.Add(v2(1, 0x31, make([]byte, 220)), uint16(300))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		var h ProxyHeader
		n, err := ParseProxyHeader(data, int(max), &h)
		if n < 0 || n > len(data) || (err != nil && n != 0) {
			t.Fatalf("ParseProxyHeader = %d, %v for %d bytes", n, err, len(data))
		}
		if err != nil {
			var pe *ProxyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ProxyError", err)
			}
		}
		for k := 0; k < len(data); k++ {
			var hk ProxyHeader
			nk, errk := ParseProxyHeader(data[:k], int(max), &hk)
			switch {
			case n > 0 && k < n && (nk != 0 || errk != nil):
				t.Fatalf("header of %d bytes, but its first %d gave %d, %v", n, k, nk, errk)
			case n > 0 && k >= n && (nk != n || errk != nil || hk.Source != h.Source || hk.Destination != h.Destination):
				t.Fatalf("header of %d bytes, but the first %d gave %d, %v", n, k, nk, errk)
			case n == 0 && err == nil && errk != nil:
				t.Fatalf("%d bytes incomplete, but the first %d failed: %v", len(data), k, errk)
			case err != nil && nk != 0:
				t.Fatalf("%d bytes failed (%v), but the first %d parsed", len(data), err, k)
			}
		}
		if n == 0 {
			return
		}
		if _, crc := h.TLV(ProxyTLVCRC32C); crc {
			return // the encoder writes no checksum: the TLVs would differ
		}
		if h.Version == 2 && h.Proxied() && h.Family != ProxyTCP4 && h.Family != ProxyTCP6 {
			return // UDP: the encoder speaks TCP
		}
		enc := AppendProxyHeader(nil, &h)
		var back ProxyHeader
		nb, errb := ParseProxyHeader(enc, len(enc), &back)
		if errb != nil || nb != len(enc) || back.Proxied() != h.Proxied() || back.Source != h.Source ||
			back.Destination != h.Destination || h.Proxied() && !bytes.Equal(back.TLVs, h.TLVs) {
			t.Fatalf("%+v re-encoded as %q parsed as %+v, %v", h, enc, back, errb)
		}
	})
}
