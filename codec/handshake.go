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
	Host     []byte
	Origin   []byte
	Key      []byte // Sec-WebSocket-Key
	Version  []byte // Sec-WebSocket-Version

	header     []byte
	upgrade    bool // Upgrade: websocket seen
	connection bool // Connection: ... upgrade ... seen
	protocols  [4][]byte
	nProtocols int
	extensions [4][]byte
	nExt       int
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
var (
	ErrBadRequestLine  = reject(http.StatusBadRequest, "malformed request line")
	ErrBadHeaderLine   = reject(http.StatusBadRequest, "malformed header line")
	ErrMethod          = &HandshakeError{Status: http.StatusMethodNotAllowed, Reason: "a WebSocket upgrade must use GET", Header: http.Header{"Allow": {"GET"}}}
	ErrHTTPVersion     = reject(http.StatusHTTPVersionNotSupported, "a WebSocket upgrade needs HTTP/1.1 or later")
	ErrNoHost          = reject(http.StatusBadRequest, "missing Host header")
	ErrNotWebSocket    = &HandshakeError{Status: http.StatusUpgradeRequired, Reason: "this endpoint speaks WebSocket: send Upgrade: websocket", Header: http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}, NotWebSocket: true}
	ErrConnection      = reject(http.StatusBadRequest, "the Connection header must contain the upgrade token")
	ErrVersion         = &HandshakeError{Status: http.StatusUpgradeRequired, Reason: "unsupported Sec-WebSocket-Version: this server speaks version 13", Header: http.Header{"Sec-WebSocket-Version": {"13"}}}
	ErrKey             = reject(http.StatusBadRequest, "Sec-WebSocket-Key must be the base64 encoding of 16 bytes")
	ErrRequestTooLarge = reject(http.StatusRequestHeaderFieldsTooLarge, "request header too large")
)

var (
	hdrHost       = []byte("Host")
	hdrOrigin     = []byte("Origin")
	hdrUpgrade    = []byte("Upgrade")
	hdrConnection = []byte("Connection")
	hdrKey        = []byte("Sec-WebSocket-Key")
	hdrVersion    = []byte("Sec-WebSocket-Version")
	hdrProtocol   = []byte("Sec-WebSocket-Protocol")
	hdrExtensions = []byte("Sec-WebSocket-Extensions")
	tokWebsocket  = []byte("websocket")
	tokUpgrade    = []byte("upgrade")
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
// 6455 §4.1 and §4.2.1).
func hasToken(v, tok []byte) bool {
	found := false
	httphead.ScanTokens(v, func(t []byte) bool {
		found = bytes.EqualFold(t, tok)
		return !found
	})
	return found
}

// ParseRequest parses and validates a complete upgrade request header (as
// delimited by [HeaderScanner]) into r, following RFC 6455 §4.2.1. It does
// not allocate. On failure it returns a *[HandshakeError] saying which check
// failed; [ErrNotWebSocket] marks a valid HTTP request that is not an
// upgrade. Even then r holds what was parsed, so a server can route a plain
// GET to a page.
func ParseRequest(header []byte, r *Request) error {
	*r = Request{header: header}
	line, rest := nextLine(header)
	rl, ok := httphead.ParseRequestLine(line)
	if !ok {
		return ErrBadRequestLine
	}
	r.Method, r.Target, r.Major, r.Minor = rl.Method, rl.URI, rl.Version.Major, rl.Version.Minor
	r.Path, r.RawQuery = splitTarget(rl.URI)

	for len(rest) > 0 {
		line, rest = nextLine(rest)
		if len(line) == 0 {
			break
		}
		k, v, ok := httphead.ParseHeaderLine(line)
		if !ok || len(k) == 0 {
			return ErrBadHeaderLine
		}
		switch {
		case bytes.EqualFold(k, hdrHost):
			r.Host = v
		case bytes.EqualFold(k, hdrOrigin):
			r.Origin = v
		case bytes.EqualFold(k, hdrUpgrade):
			// RFC 6455 §4.2.1: "An |Upgrade| header field containing the
			// value "websocket", treated as an ASCII case-insensitive value."
			r.upgrade = r.upgrade || hasToken(v, tokWebsocket)
		case bytes.EqualFold(k, hdrConnection):
			// "A |Connection| header field that includes the token
			// "Upgrade", treated as an ASCII case-insensitive value."
			r.connection = r.connection || hasToken(v, tokUpgrade)
		case bytes.EqualFold(k, hdrKey):
			r.Key = v
		case bytes.EqualFold(k, hdrVersion):
			r.Version = v
		case bytes.EqualFold(k, hdrProtocol):
			if r.nProtocols < len(r.protocols) {
				r.protocols[r.nProtocols] = v
				r.nProtocols++
			}
		case bytes.EqualFold(k, hdrExtensions):
			if r.nExt < len(r.extensions) {
				r.extensions[r.nExt] = v
				r.nExt++
			}
		}
	}

	if r.Major < 1 || r.Major == 1 && r.Minor < 1 {
		return ErrHTTPVersion
	}
	if !r.upgrade {
		if len(r.Host) == 0 {
			return ErrNoHost
		}
		return ErrNotWebSocket
	}
	if !bytes.Equal(r.Method, []byte("GET")) {
		return ErrMethod
	}
	if len(r.Host) == 0 {
		return ErrNoHost
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

// splitTarget returns the path and query of a request-target in origin form
// ("/a?b") or absolute form ("http://host/a?b", RFC 9112 §3.2.2).
func splitTarget(t []byte) (path, query []byte) {
	if len(t) > 0 && t[0] != '/' {
		if i := bytes.Index(t, []byte("://")); i >= 0 {
			t = t[i+3:]
			if j := bytes.IndexAny(t, "/?"); j >= 0 {
				t = t[j:]
			} else {
				t = nil
			}
		}
	}
	if i := bytes.IndexByte(t, '#'); i >= 0 {
		t = t[:i]
	}
	if i := bytes.IndexByte(t, '?'); i >= 0 {
		path, query = t[:i], t[i+1:]
	} else {
		path = t
	}
	if len(path) == 0 {
		path = rootPath[:1:1]
	}
	return path, query
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
		if k, v, ok := httphead.ParseHeaderLine(line); ok {
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
func AppendAccept(dst []byte, key []byte, protocol string, extensions []byte, extra http.Header) []byte {
	var acc [28]byte
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	dst = append(dst, AcceptKey(&acc, key)...)
	dst = append(dst, "\r\n"...)
	if protocol != "" {
		dst = append(dst, "Sec-WebSocket-Protocol: "...)
		dst = append(dst, protocol...)
		dst = append(dst, "\r\n"...)
	}
	if len(extensions) > 0 {
		dst = append(dst, "Sec-WebSocket-Extensions: "...)
		dst = append(dst, extensions...)
		dst = append(dst, "\r\n"...)
	}
	dst = appendHeader(dst, extra)
	return append(dst, "\r\n"...)
}

// AppendResponse appends a complete HTTP/1.1 response with a body and
// "Connection: close": a rejection, or a plain page. A zero Content-Type
// defaults to text/plain.
func AppendResponse(dst []byte, status int, header http.Header, body []byte) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, http.StatusText(status)...)
	dst = append(dst, "\r\n"...)
	if header.Get("Content-Type") == "" {
		dst = append(dst, "Content-Type: text/plain; charset=utf-8\r\n"...)
	}
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\nConnection: close\r\n"...)
	dst = appendHeader(dst, header)
	dst = append(dst, "\r\n"...)
	return append(dst, body...)
}

// AppendReject appends the response for a rejected handshake: its status,
// its header lines, and the reason as a one-line body.
func AppendReject(dst []byte, e *HandshakeError) []byte {
	body := make([]byte, 0, len(e.Reason)+1)
	body = append(append(body, e.Reason...), '\n')
	return AppendResponse(dst, e.Status, e.Header, body)
}

func appendHeader(dst []byte, h http.Header) []byte {
	for k, vs := range h {
		for _, v := range vs {
			dst = append(dst, k...)
			dst = append(dst, ": "...)
			dst = append(dst, v...)
			dst = append(dst, "\r\n"...)
		}
	}
	return dst
}
