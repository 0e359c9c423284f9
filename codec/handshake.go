package codec

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"

	"github.com/gobwas/httphead"
)

// DefaultMaxHeaderBytes is the request header cap of a [HeaderScanner]
// whose Max is zero.
const DefaultMaxHeaderBytes = 8 << 10

// HeaderScanner finds the end of an HTTP/1.1 request header in a buffer that
// grows as bytes arrive. Each call resumes where the previous one stopped, so
// a header trickled in byte by byte costs O(n) in total, not O(n²).
// The zero value is ready to use with [DefaultMaxHeaderBytes].
type HeaderScanner struct {
	// Max caps the header length, terminator included.
	Max     int
	scanned int
}

// Reset prepares the scanner for a new request.
func (s *HeaderScanner) Reset() { s.scanned = 0 }

// Scan looks for the blank line that ends the request header. p must hold
// the request from its first byte, including everything passed to earlier
// calls. It returns the header length including the blank line, or 0 when
// the header is not complete yet. It returns [ErrHeaderTooLarge] once the
// header is known to be longer than Max. Bytes after the header (a frame the
// client pipelined) are not part of the returned length.
//
// Lines may end in CRLF or, as RFC 9112 §2.2 allows a recipient to accept,
// a bare LF.
func (s *HeaderScanner) Scan(p []byte) (int, error) {
	max := s.Max
	if max <= 0 {
		max = DefaultMaxHeaderBytes
	}
	limit := len(p)
	if limit > max {
		limit = max
	}
	i := s.scanned
	for i < limit {
		j := bytes.IndexByte(p[i:limit], '\n')
		if j < 0 {
			break
		}
		i += j
		// An LF that closes an empty line ends the header.
		if i >= 1 && p[i-1] == '\n' || i >= 2 && p[i-1] == '\r' && p[i-2] == '\n' {
			s.scanned = i + 1
			return i + 1, nil
		}
		i++
	}
	s.scanned = limit
	if len(p) >= max {
		return 0, ErrHeaderTooLarge
	}
	return 0, nil
}

// Request is a parsed WebSocket upgrade request (RFC 6455 §4.2.1). Its byte
// slices alias the header passed to [ParseRequest] and are valid as long as
// that buffer is.
type Request struct {
	Method   []byte
	Target   []byte // the request-target as sent
	Path     []byte // "/" (shared, read-only) when the target has no path
	RawQuery []byte
	Major    int
	Minor    int
	// Host is the host the request is for: the Host header, or the
	// authority of an absolute-form target (RFC 9112 §3.2.2).
	Host    []byte
	Origin  []byte
	Key     []byte // Sec-WebSocket-Key
	Version []byte // Sec-WebSocket-Version

	header     []byte
	upgrade    bool // Upgrade: websocket seen
	connection bool // Connection: ... upgrade ... seen
	protocols  [4][]byte
	nProtocols int
	extensions [4][]byte
	nExt       int
	// contentLength: a Content-Length line seen
	contentLength bool
}

// HandshakeError rejects an upgrade request with an HTTP status and a
// reason a person can act on.
type HandshakeError struct {
	Status int
	Reason string
	// Header holds response header lines that belong with the status,
	// such as Sec-WebSocket-Version on 426 (RFC 6455 §4.4).
	Header http.Header
	// NotWebSocket is set when the request is a well-formed HTTP request
	// that simply is not a WebSocket upgrade: a server may answer it with
	// a page instead.
	NotWebSocket bool
}

func (e *HandshakeError) Error() string {
	return "websocket: handshake: " + strconv.Itoa(e.Status) + " " + e.Reason
}

func reject(status int, reason string) *HandshakeError {
	return &HandshakeError{Status: status, Reason: reason}
}

// Handshake rejections returned by [ParseRequest], one per failed check.
// Each reason names the rule, so that whoever wrote the client can fix it.
var (
	ErrBadRequestLine   = reject(http.StatusBadRequest, "malformed request line: it must be METHOD SP request-target SP HTTP/1.1 with single spaces (RFC 9112 §3)")
	ErrBadTarget        = reject(http.StatusBadRequest, "malformed request-target: send a path (/chat?x=1) or an absolute http, https, ws or wss URI, without a fragment or user info (RFC 9112 §3.2)")
	ErrBadHeaderLine    = reject(http.StatusBadRequest, "malformed header line: a field name is a token followed directly by a colon (RFC 9110 §5.1)")
	ErrHeaderSpace      = reject(http.StatusBadRequest, "whitespace between a header field name and its colon (RFC 9112 §5.1)")
	ErrObsFold          = reject(http.StatusBadRequest, "header line folded (obs-fold) or starting with whitespace (RFC 9112 §5.2)")
	ErrHeaderValue      = reject(http.StatusBadRequest, "control character (NUL, CR, ...) in a header field value (RFC 9110 §5.5)")
	ErrMethod           = &HandshakeError{Status: http.StatusMethodNotAllowed, Reason: "a WebSocket upgrade must use GET", Header: http.Header{"Allow": {"GET"}}}
	ErrHTTPVersion      = reject(http.StatusHTTPVersionNotSupported, "a WebSocket upgrade needs HTTP/1.1 or later")
	ErrNoHost           = reject(http.StatusBadRequest, "missing Host header")
	ErrBadHost          = reject(http.StatusBadRequest, "malformed Host header: it must be host or host:port (RFC 9112 §3.2)")
	ErrDuplicateHost    = reject(http.StatusBadRequest, "more than one Host header (RFC 9112 §3.2)")
	ErrDuplicateOrigin  = reject(http.StatusBadRequest, "more than one Origin header (RFC 6454 §7.3)")
	ErrDuplicateKey     = reject(http.StatusBadRequest, "more than one Sec-WebSocket-Key header (RFC 6455 §11.3.1)")
	ErrDuplicateVersion = reject(http.StatusBadRequest, "more than one Sec-WebSocket-Version header (RFC 6455 §11.3.5)")
	ErrRequestBody      = reject(http.StatusBadRequest, "a request to this server has no body: no Transfer-Encoding, and no Content-Length but 0 (RFC 9112 §6)")
	ErrNotWebSocket     = &HandshakeError{Status: http.StatusUpgradeRequired, Reason: "this endpoint speaks WebSocket: send Upgrade: websocket", Header: http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}, NotWebSocket: true}
	ErrConnection       = reject(http.StatusBadRequest, "the Connection header must contain the upgrade token")
	ErrVersion          = &HandshakeError{Status: http.StatusUpgradeRequired, Reason: "unsupported Sec-WebSocket-Version: this server speaks version 13", Header: http.Header{"Sec-WebSocket-Version": {"13"}}}
	ErrKey              = reject(http.StatusBadRequest, "Sec-WebSocket-Key must be the base64 encoding of 16 bytes")
	ErrRequestTooLarge  = reject(http.StatusRequestHeaderFieldsTooLarge, "request header too large")
)

// fieldErrors maps a header line's syntax error to its rejection.
var fieldErrors = [...]*HandshakeError{
	fieldObsFold:    ErrObsFold,
	fieldBadName:    ErrBadHeaderLine,
	fieldSpaceColon: ErrHeaderSpace,
	fieldBadValue:   ErrHeaderValue,
}

var (
	hdrHost       = []byte("Host")
	hdrOrigin     = []byte("Origin")
	hdrUpgrade    = []byte("Upgrade")
	hdrConnection = []byte("Connection")
	hdrKey        = []byte("Sec-WebSocket-Key")
	hdrVersion    = []byte("Sec-WebSocket-Version")
	hdrProtocol   = []byte("Sec-WebSocket-Protocol")
	hdrExtensions = []byte("Sec-WebSocket-Extensions")

	hdrTransferEncoding = []byte("Transfer-Encoding")
	tokWebsocket        = []byte("websocket")
	tokUpgrade          = []byte("upgrade")
)

// nextLine returns the line at the start of p without its line ending, and
// the rest after it.
func nextLine(p []byte) (line, rest []byte) {
	i := bytes.IndexByte(p, '\n')
	if i < 0 {
		return p, nil
	}
	line, rest = p[:i], p[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// hasToken reports whether the comma-separated list v holds tok, compared
// as an ASCII case-insensitive token (Upgrade and Connection values, RFC
// 6455 §4.1 and §4.2.1). An element is what lies between commas, without
// the whitespace around it (RFC 9110 §5.6.1), and must equal tok whole:
// "upgrade x" is not the upgrade token, as it is not for net/http's users
// (gorilla/websocket compares the same way).
func hasToken(v, tok []byte) bool {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		if i < 0 {
			i = len(v)
		}
		if bytes.EqualFold(trimOWS(v[:i]), tok) {
			return true
		}
		if i == len(v) {
			break
		}
		v = v[i+1:]
	}
	return false
}

// ParseRequest parses and validates a complete upgrade request header (as
// delimited by [HeaderScanner]) into r, following RFC 6455 §4.2.1 and the
// HTTP/1.1 syntax of RFC 9112. It does not allocate. On failure it returns
// a *[HandshakeError] saying which check failed; [ErrNotWebSocket] marks a
// valid HTTP request that is not an upgrade. Even then r holds what was
// parsed, so a server can route a plain GET to a page.
//
// It is at least as strict as net/http's server on everything that could
// make a proxy in front and this parser read different requests out of the
// same bytes (RFC 9112 §11.2): single spaces in the request line, no
// obs-fold, no whitespace before a colon, no control characters in names
// or values, exactly one valid Host, at most one Origin, Sec-WebSocket-Key
// and Sec-WebSocket-Version, and no body (Transfer-Encoding, or a
// Content-Length other than 0) behind a request whose following bytes are
// read as WebSocket frames. A target in absolute form gives the host
// (RFC 9112 §3.2.2): r.Host is then its authority, not the Host header.
// Lines may end in a bare LF (RFC 9112 §2.2).
func ParseRequest(header []byte, r *Request) error {
	*r = Request{header: header}
	line, rest := nextLine(header)
	method, target, major, minor, ok := parseRequestLine(line)
	if !ok {
		return ErrBadRequestLine
	}
	r.Method, r.Target, r.Major, r.Minor = method, target, major, minor

	var nHost, nOrigin, nKey, nVersion int
	body := false
	for len(rest) > 0 {
		line, rest = nextLine(rest)
		if len(line) == 0 {
			break
		}
		k, v, ferr := parseFieldLine(line)
		if ferr != fieldOK {
			return fieldErrors[ferr]
		}
		// Dispatch on the length first: most lines are none of these.
		switch len(k) {
		case 4:
			if bytes.EqualFold(k, hdrHost) {
				r.Host = v
				nHost++
			}
		case 6:
			if bytes.EqualFold(k, hdrOrigin) {
				r.Origin = v
				nOrigin++
			}
		case 7:
			if bytes.EqualFold(k, hdrUpgrade) {
				// RFC 6455 §4.2.1: "An |Upgrade| header field
				// containing the value "websocket", treated as an
				// ASCII case-insensitive value."
				r.upgrade = r.upgrade || hasToken(v, tokWebsocket)
			}
		case 10:
			if bytes.EqualFold(k, hdrConnection) {
				// "A |Connection| header field that includes the
				// token "Upgrade", treated as an ASCII
				// case-insensitive value."
				r.connection = r.connection || hasToken(v, tokUpgrade)
			}
		case 14:
			if bytes.EqualFold(k, hdrContentLength) {
				// Content-Length: 0 is no body; any other value,
				// valid or not, is one (or an invalid framing,
				// RFC 9112 §6.3 item 5), and so is a second line.
				body = body || parseLength(v) != 0
				body = body || r.contentLength
				r.contentLength = true
			}
		case 17:
			switch {
			case bytes.EqualFold(k, hdrKey):
				r.Key = v
				nKey++
			case bytes.EqualFold(k, hdrTransferEncoding):
				body = true // RFC 9112 §6.1: the message has a body
			}
		case 21:
			if bytes.EqualFold(k, hdrVersion) {
				r.Version = v
				nVersion++
			}
		case 22:
			if bytes.EqualFold(k, hdrProtocol) && r.nProtocols < len(r.protocols) {
				r.protocols[r.nProtocols] = v
				r.nProtocols++
			}
		case 24:
			if bytes.EqualFold(k, hdrExtensions) && r.nExt < len(r.extensions) {
				r.extensions[r.nExt] = v
				r.nExt++
			}
		}
	}

	path, query, authority, ok := parseTarget(target)
	if !ok {
		return ErrBadTarget
	}
	r.Path, r.RawQuery = path, query
	// RFC 9112 §2.3 and §2.5: the major version is the protocol; a 1.x
	// later than 1.1 is read as 1.1. HTTP/2 does not use this syntax, and
	// WebSocket needs 1.1 (RFC 6455 §4.1).
	if major != 1 || minor < 1 {
		return ErrHTTPVersion
	}
	// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request)
	// status code to any HTTP/1.1 request message that lacks a Host header
	// field and to any request message that contains more than one Host
	// header field line or a Host header field with an invalid field
	// value." An empty Host is valid HTTP, but not for a WebSocket
	// upgrade (RFC 6455 §4.1 item 4), nor worth a page.
	switch {
	case nHost > 1:
		return ErrDuplicateHost
	case len(r.Host) == 0:
		return ErrNoHost
	case !validHostPort(r.Host):
		return ErrBadHost
	}
	if authority != nil {
		// RFC 9112 §3.2.2: "When an origin server receives a request
		// with an absolute-form of request-target, the origin server
		// MUST ignore the received Host header field (if any) and
		// instead use the host information of the request-target."
		r.Host = authority
	}
	switch {
	case nOrigin > 1:
		return ErrDuplicateOrigin
	case nKey > 1:
		return ErrDuplicateKey
	case nVersion > 1:
		return ErrDuplicateVersion
	case body:
		// A body's bytes would be read as WebSocket frames, or as the
		// next request by whoever reads the connection after a page.
		return ErrRequestBody
	}
	if !r.upgrade {
		return ErrNotWebSocket
	}
	if !bytes.Equal(r.Method, []byte("GET")) {
		return ErrMethod
	}
	if !r.connection {
		return ErrConnection
	}
	if !bytes.Equal(r.Version, []byte("13")) {
		return ErrVersion
	}
	// §4.2.1 item 5: "a base64-encoded value that, when decoded, is 16
	// bytes in length". 16 bytes encode to 24 characters ending in "==".
	var key [18]byte
	if len(r.Key) != 24 {
		return ErrKey
	}
	if n, err := base64.StdEncoding.Decode(key[:], r.Key); err != nil || n != 16 {
		return ErrKey
	}
	return nil
}

// rootPath is the Path of a target with an empty path ("http://host",
// "?q"). A shared array, so that ParseRequest does not allocate (a
// []byte("/") literal escapes to the heap on every call).
var rootPath = [1]byte{'/'}

// VisitHeaders calls fn with every header line of the request, in order.
func (r *Request) VisitHeaders(fn func(key, value []byte)) {
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

// Protocols calls fn with each offered subprotocol, in the client's order of
// preference (RFC 6455 §4.2.1 item 8), until fn returns false.
func (r *Request) Protocols(fn func(p []byte) bool) {
	for i := 0; i < r.nProtocols; i++ {
		stop := false
		httphead.ScanTokens(r.protocols[i], func(t []byte) bool {
			stop = !fn(t)
			return !stop
		})
		if stop {
			return
		}
	}
}

// ExtensionHeaders calls fn with each raw Sec-WebSocket-Extensions header
// value; parse them with httphead.ScanOptions or httphead.ParseOptions.
func (r *Request) ExtensionHeaders(fn func(v []byte)) {
	for i := 0; i < r.nExt; i++ {
		fn(r.extensions[i])
	}
}

// websocketGUID is the magic string of RFC 6455 §1.3.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey computes Sec-WebSocket-Accept for a Sec-WebSocket-Key: the
// base64 of the SHA-1 of the key and the GUID (RFC 6455 §4.2.2 item 5.4).
// It writes the 28 characters into dst and returns them.
func AcceptKey(dst *[28]byte, key []byte) []byte {
	var buf [64]byte // a valid key is 24 bytes: key+GUID fit on the stack
	sum := sha1.Sum(append(append(buf[:0], key...), websocketGUID...))
	base64.StdEncoding.Encode(dst[:], sum[:])
	return dst[:]
}

// AppendAccept appends the 101 Switching Protocols response to a request
// with the given Sec-WebSocket-Key, the chosen subprotocol (if any), the
// accepted extensions header value (if any) and extra header lines.
//
// Nothing given can forge a header line: a protocol that is not a token
// (RFC 6455 §4.1 item 10 asks for one) is left out, so check it first
// ([CheckSubprotocols]); extra is written by the rules of
// [CheckAcceptHeader]: fields with invalid names and the fields the
// handshake owns are dropped, and control characters in values become
// spaces. extensions is the server's own negotiation result and is
// written as it is.
func AppendAccept(dst []byte, key []byte, protocol string, extensions []byte, extra http.Header) []byte {
	var acc [28]byte
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	dst = append(dst, AcceptKey(&acc, key)...)
	dst = append(dst, "\r\n"...)
	if protocol != "" && isToken(protocol) {
		dst = append(dst, "Sec-WebSocket-Protocol: "...)
		dst = append(dst, protocol...)
		dst = append(dst, "\r\n"...)
	}
	if len(extensions) > 0 {
		dst = append(dst, "Sec-WebSocket-Extensions: "...)
		dst = append(dst, extensions...)
		dst = append(dst, "\r\n"...)
	}
	dst = appendHeader(dst, extra, acceptOwned)
	return append(dst, "\r\n"...)
}

// AppendResponse appends a complete HTTP/1.1 response with a body and
// "Connection: close": a rejection, or a plain page. A zero Content-Type
// defaults to text/plain.
//
// header is written by the rules of [CheckResponseHeader]: fields with
// invalid names, Content-Length and Transfer-Encoding are dropped (the
// body is framed here), and control characters in values become spaces. A
// status outside 200-599 is written as 500: a 1xx (a 101 above all) would
// tell a proxy that the connection changed protocols or that the real
// answer is still to come. A 204 or 304 is sent without Content-Length and
// body (RFC 9110 §6.4.1).
func AppendResponse(dst []byte, status int, header http.Header, body []byte) []byte {
	if status < 200 || status > 599 {
		status = http.StatusInternalServerError
	}
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, http.StatusText(status)...)
	dst = append(dst, "\r\n"...)
	if header.Get("Content-Type") == "" {
		dst = append(dst, "Content-Type: text/plain; charset=utf-8\r\n"...)
	}
	noBody := status == http.StatusNoContent || status == http.StatusNotModified
	if !noBody {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(body)), 10)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "Connection: close\r\n"...)
	dst = appendHeader(dst, header, responseOwned)
	dst = append(dst, "\r\n"...)
	if noBody {
		return dst
	}
	return append(dst, body...)
}

// AppendReject appends the response for a rejected handshake: its status,
// its header lines, and the reason as a one-line body, all by the rules of
// [AppendResponse] (control characters in the reason become spaces too,
// so that it stays one line).
func AppendReject(dst []byte, e *HandshakeError) []byte {
	body := make([]byte, 0, len(e.Reason)+1)
	body = append(appendClean(body, e.Reason), '\n')
	return AppendResponse(dst, e.Status, e.Header, body)
}
