package codec

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
)

// This file holds the HTTP/1.1 syntax shared by both sides of the opening
// handshake: what a request or response line and a header field line may
// look like when read (RFC 9112 §3, §4, §5; RFC 9110 §5), and the rules every
// response header line written by this package obeys (RFC 9110 §5.5), so
// that no road through the engine can write a forged header line.
//
// Reading is as strict as net/http's server, and stricter where net/http
// is lenient in ways that let a proxy and the server disagree about a
// request (request smuggling, RFC 9112 §11.2): a line folded with obs-fold,
// whitespace before a colon, a control character in a name or a value,
// extra spaces in the request line, an ambiguous Host, a body on an
// upgrade. A bare LF ends a line as a CRLF does (RFC 9112 §2.2 lets a
// recipient accept it); a bare CR anywhere else is an error.

// Character classes, one bit each, of the bytes the parsers meet.
const (
	cToken  = 1 << iota // tchar (RFC 9110 §5.6.2)
	cValue              // field-vchar, SP, HTAB (RFC 9110 §5.5), obs-text included
	cTarget             // a byte of a request-target: VCHAR or obs-text, not '#' (RFC 9112 §3.2)
	cHost               // unreserved or sub-delims: a reg-name byte (RFC 3986 §3.2.2), '%' excluded
	cHex                // HEXDIG
	cDigit              // DIGIT
)

var charClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		isAlpha := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z'
		isDigit := '0' <= b && b <= '9'
		if isAlpha || isDigit || strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0 {
			t[c] |= cToken
		}
		if b == '\t' || b >= 0x20 && b != 0x7f {
			t[c] |= cValue
		}
		if b > 0x20 && b != 0x7f && b != '#' {
			t[c] |= cTarget
		}
		if isAlpha || isDigit || strings.IndexByte("-._~!$&'()*+,;=", b) >= 0 {
			t[c] |= cHost
		}
		if isDigit || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F' {
			t[c] |= cHex
		}
		if isDigit {
			t[c] |= cDigit
		}
	}
	return t
}()

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2): one or more
// tchar, that is ASCII letters, digits and !#$%&'*+-.^_`|~. Header names
// and subprotocols (RFC 6455 §4.1 item 10) must be tokens.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if charClass[s[i]]&cToken == 0 {
			return false
		}
	}
	return true
}

// fieldError says what is wrong with a header field line.
type fieldError uint8

const (
	fieldOK         fieldError = iota
	fieldObsFold               // the line starts with SP or HTAB (RFC 9112 §5.2)
	fieldBadName               // no colon, an empty name, or a byte that is not a tchar (RFC 9110 §5.1)
	fieldSpaceColon            // whitespace between the name and the colon (RFC 9112 §5.1)
	fieldBadValue              // a control character in the value (RFC 9110 §5.5)
)

// parseFieldLine splits a header field line, without its line ending, into
// its name and its value with the optional whitespace around it removed
// (RFC 9112 §5: field-name ":" OWS field-value OWS).
func parseFieldLine(line []byte) (name, value []byte, e fieldError) {
	if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
		// RFC 9112 §5.2: a server MUST reject obs-fold with 400 or
		// replace it; replacing would rewrite the buffer, and only
		// ancient or hostile clients fold (it is also what follows a
		// request line that ends in whitespace, §2.2).
		return nil, nil, fieldObsFold
	}
	i := 0
	for i < len(line) && charClass[line[i]]&cToken != 0 {
		i++
	}
	if i == len(line) || i == 0 {
		return nil, nil, fieldBadName
	}
	if line[i] != ':' {
		j := i
		for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
			j++
		}
		if j > i && j < len(line) && line[j] == ':' {
			// RFC 9112 §5.1: "A server MUST reject, with a response
			// status code of 400 (Bad Request), any received request
			// message that contains whitespace between a header field
			// name and colon."
			return nil, nil, fieldSpaceColon
		}
		return nil, nil, fieldBadName
	}
	name, value = line[:i], line[i+1:]
	for _, c := range value {
		// RFC 9110 §5.5: CR, LF and NUL are "invalid and dangerous";
		// other controls are invalid too. net/http rejects them all.
		if charClass[c]&cValue == 0 {
			return nil, nil, fieldBadValue
		}
	}
	return name, trimOWS(value), fieldOK
}

// trimOWS removes the optional whitespace (SP, HTAB) around a field value.
func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// parseVersion parses an HTTP-version, "HTTP/" DIGIT "." DIGIT exactly
// (RFC 9112 §2.3: HTTP-name is case-sensitive, one digit each).
func parseVersion(v []byte) (major, minor int, ok bool) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' ||
		charClass[v[5]]&cDigit == 0 || charClass[v[7]]&cDigit == 0 {
		return 0, 0, false
	}
	return int(v[5] - '0'), int(v[7] - '0'), true
}

// parseRequestLine splits a request-line (RFC 9112 §3: method SP
// request-target SP HTTP-version) with exactly one SP between the three
// parts, as net/http does: extra or other whitespace is an error, since
// "recipients MAY instead parse on whitespace-delimited word boundaries" is
// exactly where a proxy and a server could read two different requests.
func parseRequestLine(line []byte) (method, target []byte, major, minor int, ok bool) {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return
	}
	method, rest := line[:sp], line[sp+1:]
	for _, c := range method {
		if charClass[c]&cToken == 0 { // method = token (RFC 9110 §9.1)
			return
		}
	}
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return
	}
	target = rest[:sp]
	if major, minor, ok = parseVersion(rest[sp+1:]); !ok {
		return
	}
	return method, target, major, minor, true
}

// parseTarget checks a request-target and splits it. It accepts the
// origin-form ("/path?query") and the absolute-form ("http://host/path",
// the schemes http, https, ws and wss) of RFC 9112 §3.2; authority will be
// the absolute-form's host[:port] (RFC 9112 §3.2.2: the server then uses it
// instead of the Host header). Rejected: the authority and asterisk forms,
// a fragment (no form has one), a control character, SP or DEL, a '%' not
// followed by two hex digits in the path (net/http rejects those too), user
// info (RFC 9110 §4.2.4: "treat its presence as an error"), an empty or
// malformed host.
func parseTarget(t []byte) (path, query, authority []byte, ok bool) {
	if len(t) == 0 {
		return
	}
	for _, c := range t {
		if charClass[c]&cTarget == 0 {
			return
		}
	}
	if t[0] != '/' {
		i := bytes.IndexByte(t, ':')
		if i < 0 {
			return
		}
		scheme := t[:i]
		if !(bytes.EqualFold(scheme, []byte("http")) || bytes.EqualFold(scheme, []byte("https")) ||
			bytes.EqualFold(scheme, []byte("ws")) || bytes.EqualFold(scheme, []byte("wss"))) {
			return
		}
		t = t[i:]
		if len(t) < 3 || string(t[:3]) != "://" {
			return
		}
		t = t[3:]
		end := bytes.IndexAny(t, "/?")
		if end < 0 {
			end = len(t)
		}
		authority, t = t[:end], t[end:]
		if !validHostPort(authority) {
			return
		}
	}
	if i := bytes.IndexByte(t, '?'); i >= 0 {
		path, query = t[:i], t[i+1:]
	} else {
		path = t
	}
	for i := 0; i < len(path); i++ {
		if path[i] == '%' {
			if i+2 >= len(path) || charClass[path[i+1]]&cHex == 0 || charClass[path[i+2]]&cHex == 0 {
				return nil, nil, nil, false
			}
			i += 2
		}
	}
	if len(path) == 0 {
		path = rootPath[:1:1]
	}
	return path, query, authority, true
}

// validHostPort reports whether h is uri-host [":" port] (RFC 9112 §3.2,
// RFC 3986 §3.2.2 and §3.2.3): a non-empty reg-name of unreserved and
// sub-delims bytes, or an IPv6 literal in brackets, then optionally a colon
// and digits. Percent-encoding and IPvFuture, which no WebSocket client
// sends, are refused.
func validHostPort(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	var port []byte
	if h[0] == '[' {
		end := bytes.IndexByte(h, ']')
		if end < 0 || !validIPv6(h[1:end]) {
			return false
		}
		port = h[end+1:]
	} else {
		i := 0
		for i < len(h) && charClass[h[i]]&cHost != 0 {
			i++
		}
		if i == 0 {
			return false
		}
		port = h[i:]
	}
	if len(port) == 0 {
		return true
	}
	if port[0] != ':' {
		return false
	}
	for _, c := range port[1:] {
		if charClass[c]&cDigit == 0 {
			return false
		}
	}
	return true
}

// validIPv6 reports whether s is an IPv6address of RFC 3986 §3.2.2: eight
// groups of one to four hex digits separated by colons, one "::" standing
// for one or more zero groups, and optionally an IPv4 address in place of
// the last two groups.
func validIPv6(s []byte) bool {
	groups, ellipsis := 0, false
	i := 0
	if len(s) >= 2 && s[0] == ':' && s[1] == ':' {
		ellipsis, i = true, 2
	}
	for i < len(s) {
		j := i
		for j < len(s) && j-i < 5 && charClass[s[j]]&cHex != 0 {
			j++
		}
		if j < len(s) && s[j] == '.' {
			if !validIPv4(s[i:]) {
				return false
			}
			groups += 2
			i = len(s)
			break
		}
		if j == i || j-i > 4 {
			return false
		}
		groups++
		i = j
		if i == len(s) {
			break
		}
		if s[i] != ':' {
			return false
		}
		i++
		if i < len(s) && s[i] == ':' {
			if ellipsis {
				return false
			}
			ellipsis = true
			i++
		} else if i == len(s) {
			return false // a single trailing colon
		}
	}
	if ellipsis {
		return groups <= 7
	}
	return groups == 8
}

// validIPv4 reports whether s is a dotted-quad IPv4 address without
// leading zeros (RFC 3986 §3.2.2 dec-octet).
func validIPv4(s []byte) bool {
	for part := 0; part < 4; part++ {
		if part > 0 {
			if len(s) == 0 || s[0] != '.' {
				return false
			}
			s = s[1:]
		}
		n, v := 0, 0
		for n < len(s) && n < 3 && charClass[s[n]]&cDigit != 0 {
			v = v*10 + int(s[n]-'0')
			n++
		}
		if n == 0 || v > 255 || n > 1 && s[0] == '0' {
			return false
		}
		s = s[n:]
	}
	return len(s) == 0
}

// --- writing response headers ---------------------------------------------
//
// Every response this package writes (the 101, the refusals, plain pages)
// adds the application's header lines through appendHeader, and the rules
// are here and nowhere else:
//
//   - a field whose name is not a token (RFC 9110 §5.1) is dropped: there is
//     no way to write it that a recipient would read as the same field;
//   - in a value, CR, LF, NUL and every other control character but HTAB
//     are replaced by a space (RFC 9110 §5.5: a field value with CR, LF or
//     NUL is "invalid and dangerous"), so a value can never end its line and
//     start another one. net/http's Header.Write replaces CR and LF alike;
//   - a field the writer sets itself is dropped from the application's
//     header: the message framing (Content-Length, Transfer-Encoding) and,
//     in a 101, the handshake's own fields, whose duplicates would
//     contradict what the engine negotiated.
//
// [CheckResponseHeader] and [CheckAcceptHeader] report, without writing,
// what these rules would change, so that a server can log it.

// responseOwned are the fields AppendResponse writes itself: it delimits
// the body with Content-Length and closes the connection after it.
var responseOwned = []string{"Content-Length", "Transfer-Encoding"}

// acceptOwned are the fields AppendAccept writes itself or that a 101 must
// not carry (RFC 9110 §8.6, RFC 9112 §6.1: no Content-Length or
// Transfer-Encoding in a 1xx).
var acceptOwned = []string{"Upgrade", "Connection", "Sec-WebSocket-Accept", "Sec-WebSocket-Protocol",
	"Sec-WebSocket-Extensions", "Content-Length", "Transfer-Encoding"}

// HeaderFieldError describes a response header field that the response
// writers ([AppendAccept], [AppendResponse], [AppendReject]) drop or
// rewrite.
type HeaderFieldError struct {
	// Name is the field name as given (quote it before logging).
	Name string
	// Problem says what the writers do about it.
	Problem string
}

func (e *HeaderFieldError) Error() string {
	return "websocket: response header field " + strconv.Quote(e.Name) + ": " + e.Problem
}

// Problems reported in a HeaderFieldError.
const (
	problemName    = "not a token (RFC 9110 §5.1): dropped"
	problemOwned   = "set by the server itself: dropped"
	problemControl = "value contains CR, LF, NUL or another control character (RFC 9110 §5.5): replaced by spaces"
)

// fieldRule decides what the writers do with a field: drop it (its name
// and the problem), or write it, cleaning its values when dirty is set.
func fieldRule(name string, values []string, owned []string) (drop bool, problem string, dirty bool) {
	if !isToken(name) {
		return true, problemName, false
	}
	for _, o := range owned {
		if strings.EqualFold(name, o) {
			return true, problemOwned, false
		}
	}
	for _, v := range values {
		for i := 0; i < len(v); i++ {
			if charClass[v[i]]&cValue == 0 {
				return false, problemControl, true
			}
		}
	}
	return false, "", false
}

// checkHeader returns the first field of h that the rules change.
func checkHeader(h http.Header, owned []string) error {
	for k, vs := range h {
		if _, problem, _ := fieldRule(k, vs, owned); problem != "" {
			return &HeaderFieldError{Name: k, Problem: problem}
		}
	}
	return nil
}

// CheckResponseHeader reports, as a *[HeaderFieldError], a field of h that
// [AppendResponse] (and so [AppendReject]) would drop or rewrite: a name
// that is not a token, Content-Length or Transfer-Encoding (the writer
// frames the body itself), or a value with a control character. It returns
// nil when h is written as it is. It does not allocate then.
func CheckResponseHeader(h http.Header) error { return checkHeader(h, responseOwned) }

// CheckAcceptHeader is [CheckResponseHeader] for the extra header lines
// of [AppendAccept]'s 101, which also drops Upgrade, Connection and the
// Sec-WebSocket-Accept, -Protocol and -Extensions fields: the handshake
// writes those itself (choose a subprotocol through AppendAccept's
// protocol argument), and a 101 carries no Content-Length or
// Transfer-Encoding (RFC 9110 §8.6, RFC 9112 §6.1).
func CheckAcceptHeader(h http.Header) error { return checkHeader(h, acceptOwned) }

// appendHeader appends the lines of h by the rules above.
func appendHeader(dst []byte, h http.Header, owned []string) []byte {
	for k, vs := range h {
		drop, _, dirty := fieldRule(k, vs, owned)
		if drop {
			continue
		}
		for _, v := range vs {
			dst = append(dst, k...)
			dst = append(dst, ": "...)
			if dirty {
				dst = appendClean(dst, v)
			} else {
				dst = append(dst, v...)
			}
			dst = append(dst, "\r\n"...)
		}
	}
	return dst
}

// appendClean appends v with every control character but HTAB replaced by
// a space.
func appendClean(dst []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if charClass[c]&cValue == 0 {
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst
}
