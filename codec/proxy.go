package codec

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"strconv"
)

// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): a
// load balancer in TCP mode prepends one header to the connection it opens
// to a server, carrying the address of the client it relays, so that the
// server sees that address and not the balancer's.
//
// Version 1 is one line of US-ASCII text (§2.1), at most 107 bytes with its
// CRLF:
//
//	PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n
//	PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n
//	PROXY UNKNOWN\r\n                       (anything may follow UNKNOWN up to the CRLF)
//
// Single spaces, no leading zeros in the ports or in the bytes of an IPv4
// address, and the CRLF may not be a bare CR or LF.
//
// Version 2 is binary (§2.2), 16 bytes followed by a block whose length
// they give:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+---------------------------------------------------------------+
//	|                      signature, 12 bytes:                     |
//	+ - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - +
//	|     0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A ("\r\n\r\n\0\r\nQUIT\n")  |
//	+ - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - +
//	|                                                               |
//	+-------+-------+-------+-------+-------------------------------+
//	|version|command|family |transp.|  length: bytes that follow    |
//	|  (2)  | (0,1) | (0-3) | (0-2) |  (16 bits, network order)     |
//	+-------+-------+-------+-------+-------------------------------+
//	|  addresses, by family (transport 1 STREAM = TCP, 2 DGRAM = UDP):
//	|    1 AF_INET:  source 4, destination 4, ports 2 + 2 = 12 bytes
//	|    2 AF_INET6: source 16, destination 16, ports 2 + 2 = 36 bytes
//	|    3 AF_UNIX:  source 108, destination 108        = 216 bytes
//	|    0 AF_UNSPEC: none the receiver may read
//	+---------------------------------------------------------------+
//	|  then TLVs up to the length, each:                            |
//	+---------------+-------------------------------+---------------+
//	|  type (8)     |  value length (16, network)   |  value ...    |
//	+---------------+-------------------------------+---------------+
//
// The command is 0 LOCAL (a connection the balancer opened itself, a
// health check: the receiver uses the real endpoints and ignores the
// block) or 1 PROXY (relayed: the block holds the client's addresses).
// Other versions, commands, families and transports are invalid (§2.2).
// Registered TLV types are ProxyTLV*; PP2_TYPE_CRC32C, when present, is a
// CRC32c of the whole header computed with its own value zeroed, which the
// receiver must check (§2.2.3).
//
// ParseProxyHeader reads either version from the bytes a connection has
// received so far: it says "incomplete" as long as they can begin a valid
// header and fails as soon as they cannot, so a server neither waits for
// more bytes of garbage nor refuses a header that arrives in pieces.

// Proxy protocol signatures.
var (
	proxyV1Sig = []byte("PROXY ")
	proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

const (
	// MaxProxyV1Header is the longest version 1 header, CRLF included
	// (proxy-protocol.txt §2.1).
	MaxProxyV1Header = 107
	proxyV2Fixed     = 16 // signature, version and command, family, length
)

// ProxyCommand is the command of a PROXY protocol header.
type ProxyCommand uint8

// PROXY protocol commands (§2.2). A version 1 header is a ProxyRelay one,
// or a ProxyLocal one when its protocol is UNKNOWN.
const (
	// ProxyLocal: the balancer opened the connection itself (a health
	// check); the real endpoints are the right ones.
	ProxyLocal ProxyCommand = 0
	// ProxyRelay: the connection relays a client's, whose addresses the
	// header carries.
	ProxyRelay ProxyCommand = 1
)

// ProxyFamily is the address family and transport of a PROXY protocol
// header, with the values of version 2's 14th byte.
type ProxyFamily uint8

// Address families and transports (§2.2).
const (
	ProxyUnspec     ProxyFamily = 0x00 // unknown or unsupported: no addresses (v1: UNKNOWN)
	ProxyTCP4       ProxyFamily = 0x11 // TCP over IPv4 (v1: TCP4)
	ProxyUDP4       ProxyFamily = 0x12
	ProxyTCP6       ProxyFamily = 0x21 // TCP over IPv6 (v1: TCP6)
	ProxyUDP6       ProxyFamily = 0x22
	ProxyUnixStream ProxyFamily = 0x31 // AF_UNIX: addresses are paths, not reported
	ProxyUnixDgram  ProxyFamily = 0x32
)

// Registered TLV types of version 2 (§2.2.1 to §2.2.7). 0xE0-0xEF are for
// applications (AWS, for one, sends its VPC endpoint ID as 0xEA).
const (
	ProxyTLVALPN      uint8 = 0x01 // the ALPN protocol the client negotiated with the balancer
	ProxyTLVAuthority uint8 = 0x02 // the host name the client asked for: TLS SNI
	ProxyTLVCRC32C    uint8 = 0x03 // checksum of the header, checked by ParseProxyHeader
	ProxyTLVNoop      uint8 = 0x04 // padding
	ProxyTLVUniqueID  uint8 = 0x05 // the balancer's ID of the connection, up to 128 bytes
	ProxyTLVSSL       uint8 = 0x20 // client TLS details, with sub-TLVs 0x21-0x25
	ProxyTLVNetNS     uint8 = 0x30 // network namespace name
)

// ProxyHeader is a parsed PROXY protocol header.
type ProxyHeader struct {
	// Version is 1 (text) or 2 (binary).
	Version uint8
	// Command is ProxyRelay for a relayed connection, ProxyLocal for one
	// the balancer opened itself.
	Command ProxyCommand
	// Family is the relayed connection's address family and transport.
	Family ProxyFamily
	// Source is the client's address and Destination the address it
	// connected to (on the balancer). Both are valid only for a relayed
	// connection over IPv4 or IPv6: zero for ProxyLocal, ProxyUnspec and
	// AF_UNIX.
	Source, Destination netip.AddrPort
	// TLVs is the TLV area of a version 2 header, checked to be well
	// formed: read it with TLV or VisitTLVs. It aliases the parsed input.
	TLVs []byte
}

// Proxied reports whether the header carries the client's addresses: a
// relayed connection over IPv4 or IPv6.
func (h *ProxyHeader) Proxied() bool {
	return h.Command == ProxyRelay && h.Source.IsValid() && h.Destination.IsValid()
}

// VisitTLVs calls f with each TLV of the header, in order, until f
// returns false. value aliases h.TLVs.
func (h *ProxyHeader) VisitTLVs(f func(typ uint8, value []byte) bool) {
	b := h.TLVs
	for len(b) >= 3 {
		n := int(binary.BigEndian.Uint16(b[1:3]))
		if len(b)-3 < n {
			return // not from ParseProxyHeader
		}
		if !f(b[0], b[3:3+n]) {
			return
		}
		b = b[3+n:]
	}
}

// TLV returns the value of the first TLV of type typ.
func (h *ProxyHeader) TLV(typ uint8) (value []byte, ok bool) {
	h.VisitTLVs(func(t uint8, v []byte) bool {
		if t == typ {
			value, ok = v, true
			return false
		}
		return true
	})
	return value, ok
}

// Authority returns the PP2_TYPE_AUTHORITY TLV: the host name the client
// asked the balancer for (its TLS SNI), or "".
func (h *ProxyHeader) Authority() string {
	v, _ := h.TLV(ProxyTLVAuthority)
	return string(v)
}

// Clone returns a copy of h whose TLVs do not alias the parsed input.
func (h *ProxyHeader) Clone() *ProxyHeader {
	c := *h
	if h.TLVs != nil {
		c.TLVs = bytes.Clone(h.TLVs)
	}
	return &c
}

// ProxyError is a PROXY protocol header that cannot be accepted. A server
// must close the connection (§2.1: "any sequence which does not exactly
// match the protocol must be discarded and cause the receiver to abort the
// connection").
type ProxyError struct {
	Reason string
}

func (e *ProxyError) Error() string { return "proxy protocol: " + e.Reason }

// Errors returned by [ParseProxyHeader]. Any other *ProxyError is a
// malformed header.
var (
	// ErrNoProxyHeader: the connection does not begin with either
	// version's signature.
	ErrNoProxyHeader = &ProxyError{"no PROXY protocol header"}
	// ErrProxyTooLarge: a version 1 line without its CRLF in 107 bytes, or
	// a version 2 header longer than the parser's limit.
	ErrProxyTooLarge = &ProxyError{"header too large"}
)

func proxyErr(reason string) error { return &ProxyError{reason} }

// HasProxySignature reports whether b begins with a whole signature of
// either version: "PROXY " or version 2's 12 bytes. A server that does not
// trust the peer uses it to refuse a header instead of reading it as the
// start of a request.
func HasProxySignature(b []byte) bool {
	return bytes.HasPrefix(b, proxyV1Sig) || bytes.HasPrefix(b, proxyV2Sig)
}

// ParseProxyHeader parses the PROXY protocol header (version 1 or 2) at the
// start of b, which holds everything the connection received so far. It
// returns the header's length once b holds all of it, with h filled in;
// 0 and nil while b is a valid beginning of a header; or an error as soon
// as b cannot begin one: [ErrNoProxyHeader], [ErrProxyTooLarge], or another
// *[ProxyError] for a malformed header. max caps a version 2 header's
// length (its 16 bytes included); 0 or less means [DefaultMaxHeaderBytes].
// h.TLVs aliases b. ParseProxyHeader does not allocate, except to parse
// the text of a version 1 IPv6 address.
func ParseProxyHeader(b []byte, max int, h *ProxyHeader) (int, error) {
	*h = ProxyHeader{}
	if len(b) == 0 {
		return 0, nil
	}
	switch b[0] {
	case 'P':
		return parseProxyV1(b, h)
	case '\r':
		if max <= 0 {
			max = DefaultMaxHeaderBytes
		}
		return parseProxyV2(b, max, h)
	}
	return 0, ErrNoProxyHeader
}

// parseProxyV1 parses a version 1 line (§2.1).
func parseProxyV1(b []byte, h *ProxyHeader) (int, error) {
	if n := min(len(b), len(proxyV1Sig)); !bytes.Equal(b[:n], proxyV1Sig[:n]) {
		return 0, ErrNoProxyHeader
	}
	window := b[:min(len(b), MaxProxyV1Header)]
	end := bytes.IndexByte(window, '\n')
	if end < 0 {
		// Incomplete: fail now if what there is cannot start a valid line.
		if err := checkV1Prefix(window); err != nil {
			return 0, err
		}
		if len(b) >= MaxProxyV1Header {
			return 0, ErrProxyTooLarge
		}
		return 0, nil
	}
	if end == 0 || window[end-1] != '\r' {
		return 0, proxyErr("v1 line ends in a bare LF")
	}
	line := window[:end-1]
	if err := checkV1Prefix(line); err != nil {
		return 0, err
	}
	if len(line) < len(proxyV1Sig) {
		return 0, proxyErr("v1 line too short")
	}
	rest := line[len(proxyV1Sig):]
	h.Version = 1
	if bytes.HasPrefix(rest, []byte("UNKNOWN")) {
		// §2.1: the receiver ignores whatever follows UNKNOWN, and uses
		// the real endpoints.
		h.Command, h.Family = ProxyLocal, ProxyUnspec
		return end + 1, nil
	}
	var f [5][]byte
	for i := range f {
		sp := bytes.IndexByte(rest, ' ')
		if i == len(f)-1 {
			if sp >= 0 {
				return 0, proxyErr("v1 line has more than five fields")
			}
			f[i] = rest
			break
		}
		if sp < 0 {
			return 0, proxyErr("v1 line has fewer than five fields")
		}
		f[i], rest = rest[:sp], rest[sp+1:]
	}
	var v6 bool
	switch string(f[0]) {
	case "TCP4":
		h.Family = ProxyTCP4
	case "TCP6":
		h.Family, v6 = ProxyTCP6, true
	default:
		return 0, proxyErr("v1 protocol is not TCP4, TCP6 or UNKNOWN")
	}
	src, err := parseV1Addr(f[1], v6)
	if err != nil {
		return 0, err
	}
	dst, err := parseV1Addr(f[2], v6)
	if err != nil {
		return 0, err
	}
	sp, ok1 := parseV1Port(f[3])
	dp, ok2 := parseV1Port(f[4])
	if !ok1 || !ok2 {
		return 0, proxyErr("v1 port is not a decimal number in 0..65535 without leading zeros")
	}
	h.Command = ProxyRelay
	h.Source, h.Destination = netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)
	return end + 1, nil
}

// checkV1Prefix fails a version 1 line, whole or in part (without its
// CRLF), that no valid line begins with: so that garbage is refused at once
// instead of after the handshake timeout. It never fails a beginning of a
// valid line.
func checkV1Prefix(b []byte) error {
	if n := min(len(b), len(proxyV1Sig)); !bytes.Equal(b[:n], proxyV1Sig[:n]) {
		return ErrNoProxyHeader
	}
	if len(b) <= len(proxyV1Sig) {
		return nil
	}
	rest := b[len(proxyV1Sig):]
	for _, p := range [...]string{"TCP4 ", "TCP6 ", "UNKNOWN"} {
		n := min(len(rest), len(p))
		if string(rest[:n]) != p[:n] {
			continue
		}
		if p == "UNKNOWN" {
			// Anything may follow, but a CR only as the start of the CRLF.
			if i := bytes.IndexByte(rest, '\r'); i >= 0 && i != len(rest)-1 {
				return proxyErr("v1 line has a CR before its end")
			}
			return nil
		}
		for i, c := range rest[n:] {
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F', c == '.', c == ':', c == ' ':
			case c == '\r' && n+i == len(rest)-1: // the CRLF's CR, LF not here yet
			default:
				return proxyErr("v1 line has a character no address or port has")
			}
		}
		return nil
	}
	return proxyErr("v1 protocol is not TCP4, TCP6 or UNKNOWN")
}

// parseV1Addr parses an address of a version 1 line: IPv4 dotted decimal
// without leading zeros for TCP4, IPv6 without a zone for TCP6.
func parseV1Addr(b []byte, v6 bool) (netip.Addr, error) {
	if len(b) == 0 || len(b) > 45 {
		return netip.Addr{}, proxyErr("v1 address is empty or too long")
	}
	if !v6 {
		if a, ok := parseIPv4(b); ok {
			return a, nil
		}
		return netip.Addr{}, proxyErr("v1 TCP4 address is not four decimal bytes without leading zeros")
	}
	a, err := netip.ParseAddr(string(b))
	if err != nil || !a.Is6() || a.Zone() != "" {
		return netip.Addr{}, proxyErr("v1 TCP6 address is not an IPv6 address")
	}
	return a, nil
}

// parseIPv4 parses dotted decimal as §2.1 has it: exactly four numbers in
// 0..255, no leading zeros. (netip.ParseAddr agrees, but the error it
// returns keeps the text, so converting the bytes to call it allocates.)
func parseIPv4(b []byte) (netip.Addr, bool) {
	var a [4]byte
	for i := range a {
		n, digits := 0, 0
		for len(b) > 0 && b[0] >= '0' && b[0] <= '9' {
			if digits > 0 && n == 0 || digits == 3 {
				return netip.Addr{}, false // a leading zero, or a fourth digit
			}
			n = n*10 + int(b[0]-'0')
			digits++
			b = b[1:]
		}
		if digits == 0 || n > 255 {
			return netip.Addr{}, false
		}
		a[i] = byte(n)
		if i < 3 {
			if len(b) == 0 || b[0] != '.' {
				return netip.Addr{}, false
			}
			b = b[1:]
		}
	}
	return netip.AddrFrom4(a), len(b) == 0
}

// parseV1Port parses a decimal port without leading zeros.
func parseV1Port(b []byte) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 || len(b) > 1 && b[0] == '0' {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return uint16(n), n <= 65535
}

// proxyV2AddrLen is the address block length of each valid family byte,
// or -1 for the invalid ones.
func proxyV2AddrLen(fam byte) int {
	switch ProxyFamily(fam) {
	case ProxyUnspec:
		return 0
	case ProxyTCP4, ProxyUDP4:
		return 12
	case ProxyTCP6, ProxyUDP6:
		return 36
	case ProxyUnixStream, ProxyUnixDgram:
		return 216
	}
	return -1
}

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// parseProxyV2 parses a version 2 header (§2.2).
func parseProxyV2(b []byte, max int, h *ProxyHeader) (int, error) {
	if n := min(len(b), len(proxyV2Sig)); !bytes.Equal(b[:n], proxyV2Sig[:n]) {
		return 0, ErrNoProxyHeader
	}
	if len(b) > 12 {
		if b[12]>>4 != 2 {
			return 0, proxyErr("v2 version is not 2")
		}
		if b[12]&0xF > 1 {
			return 0, proxyErr("v2 command is neither LOCAL nor PROXY")
		}
	}
	if len(b) > 13 && proxyV2AddrLen(b[13]) < 0 {
		return 0, proxyErr("v2 address family or transport is not a valid one")
	}
	if len(b) < proxyV2Fixed {
		return 0, nil
	}
	total := proxyV2Fixed + int(binary.BigEndian.Uint16(b[14:16]))
	if total > max {
		return 0, ErrProxyTooLarge
	}
	if len(b) < total {
		return 0, nil
	}
	h.Version = 2
	h.Command = ProxyCommand(b[12] & 0xF)
	h.Family = ProxyFamily(b[13])
	if h.Command == ProxyLocal {
		// §2.2: use the real endpoints and discard the block, family and
		// all, whatever it holds.
		return total, nil
	}
	block := b[proxyV2Fixed:total]
	alen := proxyV2AddrLen(b[13])
	if h.Family == ProxyUnspec {
		// §2.2: "the receiver should ignore address information", and
		// with no known address length nothing after can be read either.
		return total, nil
	}
	if len(block) < alen {
		return 0, proxyErr("v2 address block shorter than its family's addresses")
	}
	switch h.Family {
	case ProxyTCP4, ProxyUDP4:
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[0:4])), binary.BigEndian.Uint16(block[8:10]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[4:8])), binary.BigEndian.Uint16(block[10:12]))
	case ProxyTCP6, ProxyUDP6:
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[0:16])), binary.BigEndian.Uint16(block[32:34]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[16:32])), binary.BigEndian.Uint16(block[34:36]))
	}
	tlvs := block[alen:]
	crcAt := -1
	for t := tlvs; len(t) > 0; {
		if len(t) < 3 {
			return 0, proxyErr("v2 TLV cut short")
		}
		n := int(binary.BigEndian.Uint16(t[1:3]))
		if len(t)-3 < n {
			return 0, proxyErr("v2 TLV longer than the header")
		}
		if t[0] == ProxyTLVCRC32C {
			if n != 4 || crcAt >= 0 {
				return 0, proxyErr("v2 CRC32C TLV is not one 4-byte value")
			}
			crcAt = total - len(t) + 3
		}
		t = t[3+n:]
	}
	if crcAt >= 0 {
		// §2.2.3: the CRC32c of the whole header with the checksum's own
		// value zeroed.
		var zero [4]byte
		sum := crc32.Update(0, crc32c, b[:crcAt])
		sum = crc32.Update(sum, crc32c, zero[:])
		sum = crc32.Update(sum, crc32c, b[crcAt+4:total])
		if sum != binary.BigEndian.Uint32(b[crcAt:crcAt+4]) {
			return 0, proxyErr("v2 CRC32C does not match the header")
		}
	}
	if len(tlvs) > 0 {
		h.TLVs = tlvs
	}
	return total, nil
}

// AppendProxyHeader appends h encoded as a PROXY protocol header of
// h.Version (1, or 2 for any other value) to b, for a balancer, a test or a
// client that speaks the protocol. A header that is not [ProxyHeader.Proxied]
// is encoded as v1's UNKNOWN or v2's LOCAL, without addresses; otherwise
// the family follows the addresses (TCP over IPv4 or IPv6; an IPv4 source
// with an IPv6 destination is sent as IPv6). Version 2 carries h.TLVs as
// they are (see [AppendProxyTLV]) and no checksum.
func AppendProxyHeader(b []byte, h *ProxyHeader) []byte {
	src, dst := h.Source, h.Destination
	v4 := src.Addr().Is4() && dst.Addr().Is4()
	if !v4 && h.Proxied() {
		src = netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port())
		dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	}
	if h.Version == 1 {
		if !h.Proxied() {
			return append(b, "PROXY UNKNOWN\r\n"...)
		}
		b = append(b, "PROXY TCP4 "...)
		if !v4 {
			b[len(b)-2] = '6'
		}
		b = src.Addr().WithZone("").AppendTo(b)
		b = append(b, ' ')
		b = dst.Addr().WithZone("").AppendTo(b)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(src.Port()), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(dst.Port()), 10)
		return append(b, "\r\n"...)
	}
	b = append(b, proxyV2Sig...)
	if !h.Proxied() {
		b = append(b, 0x20|byte(ProxyLocal), byte(ProxyUnspec))
		b = binary.BigEndian.AppendUint16(b, uint16(len(h.TLVs)))
		return append(b, h.TLVs...)
	}
	fam, alen := ProxyTCP4, 12
	if !v4 {
		fam, alen = ProxyTCP6, 36
	}
	b = append(b, 0x20|byte(ProxyRelay), byte(fam))
	b = binary.BigEndian.AppendUint16(b, uint16(alen+len(h.TLVs)))
	if v4 {
		s, d := src.Addr().As4(), dst.Addr().As4()
		b = append(append(b, s[:]...), d[:]...)
	} else {
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	return append(b, h.TLVs...)
}

// AppendProxyTLV appends one version 2 TLV to b: for building
// [ProxyHeader].TLVs. value is cut to 65535 bytes.
func AppendProxyTLV(b []byte, typ uint8, value []byte) []byte {
	if len(value) > 0xFFFF {
		value = value[:0xFFFF]
	}
	b = append(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(value)))
	return append(b, value...)
}
