package codec

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gobwas/httphead"
)

// This file is the client side of the opening handshake (RFC 6455 §4.1):
// the upgrade request a client sends, and the checks a client must make on
// the server's answer before it speaks WebSocket. Like the server side, it
// is pure functions over byte slices: the caller does the I/O, finds the end
// of the response header with a [HeaderScanner] (whose cap bounds it), and
// hands the complete header to [ParseResponse].

// ClientRequest describes an opening handshake request (RFC 6455 §4.1).
type ClientRequest struct {
	// Host is the Host header value: host, or host:port when the port is
	// not the scheme's default (§4.1 item 4).
	Host string
	// Target is the request-target: the path and query of the URL, "/"
	// when empty (§4.1 item 3; a fragment is never sent, §3).
	Target string
	// Key is the Sec-WebSocket-Key: see [NewKey].
	Key string
	// Protocols are the offered subprotocols, in order of preference
	// (§4.1 item 10).
	Protocols []string
	// Extensions is the Sec-WebSocket-Extensions value, "" for none (for
	// permessage-deflate see [ClientDeflateOffer]).
	Extensions string
	// Header holds extra header lines (Authorization, Cookie, Origin,
	// User-Agent). A Host entry replaces the Host line. See
	// [CheckRequestHeader] for what it may not hold.
	Header http.Header
}

// NewKey returns the Sec-WebSocket-Key for a nonce: its base64 encoding.
// The nonce must be 16 bytes "selected randomly for each connection"
// (§4.1 item 7), from a source such as crypto/rand.
func NewKey(nonce [16]byte) string { return base64.StdEncoding.EncodeToString(nonce[:]) }

// handshakeHeaders are the header lines the handshake itself writes: an
// application header that sets them would contradict the request.
var handshakeHeaders = []string{"Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions"}

// CheckRequestHeader reports whether h may be added to an opening
// handshake: header names must be HTTP tokens and values must not contain
// CR, LF, NUL (which would let a value inject header lines) or another
// control character but HTAB (which a strict server refuses), and h must
// not set Upgrade, Connection, Sec-WebSocket-Key, Sec-WebSocket-Version or
// Sec-WebSocket-Extensions, which the handshake writes itself (offer
// subprotocols and extensions through [ClientRequest]). A
// Sec-WebSocket-Protocol entry is allowed and sent as it is.
func CheckRequestHeader(h http.Header) error {
	for k, vs := range h {
		if !isToken(k) {
			return errors.New("websocket: invalid request header name " + strconv.Quote(k))
		}
		for _, hk := range handshakeHeaders {
			if strings.EqualFold(k, hk) {
				return errors.New("websocket: the request header " + hk + " is set by the handshake and may not be given")
			}
		}
		for _, v := range vs {
			for i := 0; i < len(v); i++ {
				if charClass[v[i]]&cValue == 0 {
					return errors.New("websocket: the value of request header " + k + " contains CR, LF, NUL or another control character (RFC 9110 §5.5)")
				}
			}
		}
	}
	return nil
}

// CheckSubprotocols reports whether every entry of protocols may be offered
// in Sec-WebSocket-Protocol: RFC 6455 §4.1 item 10 asks for tokens, so a
// value with a comma, a space or a separator is refused.
func CheckSubprotocols(protocols []string) error {
	for _, p := range protocols {
		if !isToken(p) {
			return errors.New("websocket: invalid subprotocol " + strconv.Quote(p))
		}
	}
	return nil
}

// AppendRequest appends the opening handshake request r (RFC 6455 §4.1):
// GET, HTTP/1.1, Host, Upgrade: websocket, Connection: Upgrade, the key,
// version 13, the subprotocols and extensions offered, then r.Header. The
// caller checks r.Header with [CheckRequestHeader] first.
func AppendRequest(dst []byte, r *ClientRequest) []byte {
	target := r.Target
	if target == "" {
		target = "/"
	}
	host := r.Host
	if h := r.Header.Get("Host"); h != "" {
		host = h
	}
	dst = append(dst, "GET "...)
	dst = append(dst, target...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "...)
	dst = append(dst, r.Key...)
	dst = append(dst, "\r\nSec-WebSocket-Version: 13\r\n"...)
	if len(r.Protocols) > 0 {
		dst = append(dst, "Sec-WebSocket-Protocol: "...)
		for i, p := range r.Protocols {
			if i > 0 {
				dst = append(dst, ", "...)
			}
			dst = append(dst, p...)
		}
		dst = append(dst, "\r\n"...)
	}
	if r.Extensions != "" {
		dst = append(dst, "Sec-WebSocket-Extensions: "...)
		dst = append(dst, r.Extensions...)
		dst = append(dst, "\r\n"...)
	}
	for k, vs := range r.Header {
		if strings.EqualFold(k, "Host") {
			continue
		}
		for _, v := range vs {
			dst = append(dst, k...)
			dst = append(dst, ": "...)
			dst = append(dst, v...)
			dst = append(dst, "\r\n"...)
		}
	}
	return append(dst, "\r\n"...)
}

// Response is a parsed HTTP response to an opening handshake. Its byte
// slices alias the header passed to [ParseResponse] and are valid as long
// as that buffer is.
type Response struct {
	Major, Minor int
	// Status is the status code, e.g. 101; Reason the reason phrase.
	Status int
	Reason []byte
	// Accept is the Sec-WebSocket-Accept value.
	Accept []byte
	// Location is the Location header of a redirect.
	Location []byte
	// ContentLength is the Content-Length, -1 when absent or invalid.
	ContentLength int64

	header     []byte
	upgrade    bool // Upgrade: websocket seen
	connection bool // Connection: ... upgrade ... seen
	protocols  [4][]byte
	nProtocols int
	extensions [4][]byte
	nExt       int
	nAccept    int
	// transferEncoding: a Transfer-Encoding line seen
	transferEncoding bool
}

// InvalidResponseError says why a client must fail the connection on the
// server's answer to its opening handshake (RFC 6455 §4.1: "the client
// MUST _Fail the WebSocket Connection_").
type InvalidResponseError struct{ Reason string }

func (e *InvalidResponseError) Error() string {
	return "websocket: bad handshake response: " + e.Reason
}

// Rejections of a handshake response, one per failed check.
var (
	ErrBadStatusLine       = &InvalidResponseError{"malformed status line"}
	ErrBadResponseHeader   = &InvalidResponseError{"malformed header line (RFC 9112 §5)"}
	ErrResponseLength      = &InvalidResponseError{"invalid or repeated Content-Length (RFC 9112 §6.3)"}
	ErrResponseFraming     = &InvalidResponseError{"101 response with a body: Transfer-Encoding, or a Content-Length other than 0 (RFC 9110 §8.6, RFC 9112 §6.1)"}
	ErrDuplicateAccept     = &InvalidResponseError{"more than one Sec-WebSocket-Accept header (RFC 6455 §11.3.3)"}
	ErrResponseTooLarge    = &InvalidResponseError{"response header too large"}
	ErrResponseVersion     = &InvalidResponseError{"response is not HTTP/1.1"}
	ErrNoUpgrade           = &InvalidResponseError{"101 response without Upgrade: websocket"}
	ErrNoConnectionUpgrade = &InvalidResponseError{"101 response without Connection: Upgrade"}
	ErrAccept              = &InvalidResponseError{"Sec-WebSocket-Accept does not match the key"}
	ErrProtocolNotOffered  = &InvalidResponseError{"the server chose a subprotocol that was not offered"}
	ErrExtensionNotOffered = &InvalidResponseError{"the server accepted an extension that was not offered"}
	ErrDeflateResponse     = &InvalidResponseError{"malformed permessage-deflate response"}
	ErrDeflateRefused      = &InvalidResponseError{"the server did not accept server_no_context_takeover"}
)

// ParseResponse parses a complete HTTP response header (as delimited by a
// [HeaderScanner], which also caps its size) into r. It does not allocate.
// It checks only that the header is well-formed HTTP/1.x, with the same
// strict line syntax as [ParseRequest] (a folded line, whitespace before a
// colon or a control character in a value is an error, RFC 9112 §4 and
// §5), and a valid, single Content-Length (RFC 9112 §6.3 item 5);
// [Response.Check] then checks a 101 against the request. Any status
// parses: a client reports a 3xx or 4xx with its headers and body.
func ParseResponse(header []byte, r *Response) error {
	*r = Response{header: header, ContentLength: -1}
	line, rest := nextLine(header)
	if !parseStatusLine(line, r) {
		return ErrBadStatusLine
	}
	if r.Major != 1 {
		return ErrResponseVersion
	}
	nLength := 0
	for len(rest) > 0 {
		line, rest = nextLine(rest)
		if len(line) == 0 {
			break
		}
		k, v, ferr := parseFieldLine(line)
		if ferr != fieldOK {
			return ErrBadResponseHeader
		}
		switch {
		case bytes.EqualFold(k, hdrUpgrade):
			r.upgrade = r.upgrade || hasToken(v, tokWebsocket)
		case bytes.EqualFold(k, hdrConnection):
			r.connection = r.connection || hasToken(v, tokUpgrade)
		case bytes.EqualFold(k, hdrAccept):
			r.Accept = v
			r.nAccept++
		case bytes.EqualFold(k, hdrLocation):
			r.Location = v
		case bytes.EqualFold(k, hdrContentLength):
			r.ContentLength = parseLength(v)
			nLength++
			if r.ContentLength < 0 || nLength > 1 {
				return ErrResponseLength
			}
		case bytes.EqualFold(k, hdrTransferEncoding):
			r.transferEncoding = true
		case bytes.EqualFold(k, hdrProtocol):
			if r.nProtocols < len(r.protocols) {
				r.protocols[r.nProtocols] = v
			}
			r.nProtocols++ // counted past the array: more than one is an error anyway
		case bytes.EqualFold(k, hdrExtensions):
			if r.nExt >= len(r.extensions) {
				return &InvalidResponseError{"too many Sec-WebSocket-Extensions headers"}
			}
			r.extensions[r.nExt] = v
			r.nExt++
		}
	}
	return nil
}

// parseStatusLine parses a status-line (RFC 9112 §4: HTTP-version SP
// status-code SP [ reason-phrase ]) into r. Like net/http it also takes a
// line that ends right after the code; the reason may hold no control
// character but HTAB.
func parseStatusLine(line []byte, r *Response) bool {
	if len(line) < 12 || line[8] != ' ' {
		return false
	}
	major, minor, ok := parseVersion(line[:8])
	if !ok {
		return false
	}
	code := line[9:12]
	for _, c := range code {
		if charClass[c]&cDigit == 0 {
			return false
		}
	}
	status := int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if status < 100 {
		return false
	}
	reason := line[12:]
	if len(reason) > 0 {
		if reason[0] != ' ' {
			return false
		}
		reason = reason[1:]
		for _, c := range reason {
			if charClass[c]&cValue == 0 {
				return false
			}
		}
	}
	r.Major, r.Minor, r.Status, r.Reason = major, minor, status, reason
	return true
}

// parseLength parses a Content-Length value, -1 when it is not one.
// (strconv.ParseInt allocates its error; a parser must not.)
func parseLength(v []byte) int64 {
	if len(v) == 0 || len(v) > 18 {
		return -1
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

var (
	hdrAccept        = []byte("Sec-WebSocket-Accept")
	hdrLocation      = []byte("Location")
	hdrContentLength = []byte("Content-Length")
)

// VisitHeaders calls fn with every header line of the response, in order.
func (r *Response) VisitHeaders(fn func(key, value []byte)) {
	_, rest := nextLine(r.header)
	for len(rest) > 0 {
		var line []byte
		line, rest = nextLine(rest)
		if len(line) == 0 {
			return
		}
		if k, v, e := parseFieldLine(line); e == fieldOK {
			fn(k, v)
		}
	}
}

// Check makes the checks of RFC 6455 §4.1 on a 101 response to a request
// with the given key that offered protocols: HTTP/1.1 or later, Upgrade:
// websocket, a Connection header with the upgrade token, the
// Sec-WebSocket-Accept computed from the key, and at most one subprotocol,
// one of those offered. It returns the chosen subprotocol (nil for none).
// Extensions are checked by the negotiation of each ([NegotiateClientDeflate]
// for permessage-deflate; [Response.Extensions] lists what the server
// accepted). A status other than 101 is not an error here: the caller
// reports it.
func (r *Response) Check(key string, protocols []string) (protocol []byte, err error) {
	if r.Major < 1 || r.Major == 1 && r.Minor < 1 {
		return nil, ErrResponseVersion
	}
	// §4.1, the client's checks of the server's handshake, items 2 and 3.
	if !r.upgrade {
		return nil, ErrNoUpgrade
	}
	if !r.connection {
		return nil, ErrNoConnectionUpgrade
	}
	// RFC 9110 §8.6 and RFC 9112 §6.1: a 1xx carries neither; what
	// follows the header is WebSocket frames, never a body.
	if r.transferEncoding || r.ContentLength > 0 {
		return nil, ErrResponseFraming
	}
	if r.nAccept > 1 {
		return nil, ErrDuplicateAccept
	}
	// Item 4: the Accept value is the base64 SHA-1 of key + GUID; "the
	// client MUST _Fail the WebSocket Connection_" if it differs.
	var want [28]byte
	sum := sha1.Sum([]byte(key + websocketGUID))
	base64.StdEncoding.Encode(want[:], sum[:])
	if !bytes.Equal(bytes.TrimSpace(r.Accept), want[:]) {
		return nil, ErrAccept
	}
	// Item 6: a subprotocol "that was not present in the client's
	// handshake" fails the connection; so does a list of several.
	switch {
	case r.nProtocols == 0:
		return nil, nil
	case r.nProtocols > 1:
		return nil, &InvalidResponseError{"more than one Sec-WebSocket-Protocol header"}
	}
	p := bytes.TrimSpace(r.protocols[0])
	if len(p) == 0 {
		return nil, nil
	}
	for _, o := range protocols {
		if string(p) == o {
			return p, nil
		}
	}
	return nil, ErrProtocolNotOffered
}

// Extensions calls fn with each raw Sec-WebSocket-Extensions header value
// of the response.
func (r *Response) Extensions(fn func(v []byte)) {
	for i := 0; i < r.nExt; i++ {
		fn(r.extensions[i])
	}
}

// --- permessage-deflate, the client's side (RFC 7692) ---------------------

// ClientDeflateOffer is the permessage-deflate offer a client sends.
type ClientDeflateOffer struct {
	// ServerNoContextTakeover asks the server to compress every message
	// on its own (§7.1.1.1), so that the client need not remember the
	// last 32 KiB the server sent on each connection.
	ServerNoContextTakeover bool
	// ClientNoContextTakeover tells the server that the client
	// compresses every message on its own (§7.1.1.2).
	ClientNoContextTakeover bool
	// ClientMaxWindowBits tells the server that the client can limit its
	// window if the server asks (§7.1.2.2), without asking for a limit.
	ClientMaxWindowBits bool
}

// AppendOffer appends the Sec-WebSocket-Extensions value of the offer,
// e.g. "permessage-deflate; client_no_context_takeover".
func (o ClientDeflateOffer) AppendOffer(dst []byte) []byte {
	dst = append(dst, DeflateExtension...)
	if o.ServerNoContextTakeover {
		dst = append(dst, "; "+paramServerNoContextTakeover...)
	}
	if o.ClientNoContextTakeover {
		dst = append(dst, "; "+paramClientNoContextTakeover...)
	}
	if o.ClientMaxWindowBits {
		dst = append(dst, "; "+paramClientMaxWindowBits...)
	}
	return dst
}

// ClientDeflateParams are the permessage-deflate parameters in effect on a
// client connection, from the server's response.
type ClientDeflateParams struct {
	// ServerNoContextTakeover: the server compresses every message on its
	// own, so the client decompresses each without the previous ones.
	ServerNoContextTakeover bool
	// ClientNoContextTakeover: the client must compress every message on
	// its own (the server asked, or the client offered it).
	ClientNoContextTakeover bool
	// ClientMaxWindowBits is the window the server allowed the client,
	// 8-15, or 0 for the full 32 KiB.
	ClientMaxWindowBits int
	// ServerMaxWindowBits is the server's window as it announced it, 8-15,
	// or 0. A decompressor with a 32 KiB window reads any of them.
	ServerMaxWindowBits int
}

// CompressLimit returns the largest message the client may compress under
// p, or 0 for no limit: the client honours a client_max_window_bits below
// 15 as the server side honours server_max_window_bits (see
// [DeflateParams.CompressLimit]), by compressing each message on its own
// and only when it fits in the window.
func (p ClientDeflateParams) CompressLimit() int {
	if p.ClientMaxWindowBits > 0 && p.ClientMaxWindowBits < 15 {
		return 1 << p.ClientMaxWindowBits
	}
	return 0
}

// NegotiateClientDeflate reads the server's Sec-WebSocket-Extensions
// headers for a request that made offer o (the only extension offered). ok
// is false when the server did not accept permessage-deflate; err is set
// when the response must fail the connection (RFC 6455 §9.1, RFC 7692 §5
// and §7): an extension that was not offered, permessage-deflate accepted
// twice, an unknown or repeated parameter, a window size outside 8-15,
// client_max_window_bits when the client did not offer it, or an offered
// server_no_context_takeover that the server did not accept.
func NegotiateClientDeflate(r *Response, o ClientDeflateOffer) (p ClientDeflateParams, ok bool, err error) {
	for i := 0; i < r.nExt; i++ {
		v := r.extensions[i]
		if len(bytes.TrimSpace(v)) == 0 {
			continue
		}
		cur := -1
		var seen uint8
		valid := httphead.ScanOptions(v, func(index int, name, attr, value []byte) httphead.Control {
			if !bytes.EqualFold(name, []byte(DeflateExtension)) {
				err = ErrExtensionNotOffered
				return httphead.ControlBreak
			}
			if index != cur {
				if ok { // §7: the server accepts one offer at most
					err = ErrDeflateResponse
					return httphead.ControlBreak
				}
				cur, ok = index, true
			}
			if len(attr) == 0 {
				return httphead.ControlContinue
			}
			if e := clientDeflateParam(&p, &seen, o, attr, value); e != nil {
				err = e
				return httphead.ControlBreak
			}
			return httphead.ControlContinue
		})
		if err != nil {
			return ClientDeflateParams{}, false, err
		}
		if !valid {
			return ClientDeflateParams{}, false, ErrDeflateResponse
		}
	}
	if !ok {
		return ClientDeflateParams{}, false, nil
	}
	if o.ServerNoContextTakeover && !p.ServerNoContextTakeover {
		// §7.1.1.1: a server accepts this parameter by including it in
		// its response. Without it the server would compress against
		// its previous messages, which an offer that asked otherwise
		// did not prepare for.
		return ClientDeflateParams{}, false, ErrDeflateRefused
	}
	if o.ClientNoContextTakeover {
		p.ClientNoContextTakeover = true
	}
	return p, true, nil
}

// clientDeflateParam applies one parameter of a deflate response.
func clientDeflateParam(p *ClientDeflateParams, seen *uint8, o ClientDeflateOffer, name, value []byte) error {
	var bit uint8
	switch {
	case bytes.EqualFold(name, []byte(paramServerNoContextTakeover)):
		bit = 1
		if value != nil {
			return ErrDeflateResponse
		}
		p.ServerNoContextTakeover = true
	case bytes.EqualFold(name, []byte(paramClientNoContextTakeover)):
		// §7.1.1.2: the server may send it even if not offered.
		bit = 2
		if value != nil {
			return ErrDeflateResponse
		}
		p.ClientNoContextTakeover = true
	case bytes.EqualFold(name, []byte(paramServerMaxWindowBits)):
		// §7.1.2.1: a value of 8-15 is required; the server may send it
		// unasked.
		bit = 4
		if p.ServerMaxWindowBits = parseWindowBits(value); p.ServerMaxWindowBits == 0 {
			return ErrDeflateResponse
		}
	case bytes.EqualFold(name, []byte(paramClientMaxWindowBits)):
		// §7.1.2.2: only if offered, and then with a value of 8-15.
		bit = 8
		if !o.ClientMaxWindowBits {
			return &InvalidResponseError{"client_max_window_bits in the response, not offered"}
		}
		if p.ClientMaxWindowBits = parseWindowBits(value); p.ClientMaxWindowBits == 0 {
			return ErrDeflateResponse
		}
	default:
		return &InvalidResponseError{"unknown permessage-deflate parameter " + strconv.Quote(string(name))}
	}
	if *seen&bit != 0 {
		return &InvalidResponseError{"permessage-deflate parameter " + string(name) + " given twice"}
	}
	*seen |= bit
	return nil
}
