package engine

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/wsloop/wsloop/codec"
)

// Dialing through a proxy (DialOptions.Proxy).
//
// The proxy is chosen before anything is dialed; the TCP connection then
// goes to the proxy instead of the host, and a tunnel to the host is opened
// through it (an HTTP CONNECT request, or a SOCKS5 exchange) on the dialing
// goroutine, bounded by the dial's context like the rest. From there the
// dial goes on as without a proxy: TLS for wss://, the upgrade, adoption
// of the socket by a loop, which never knows there was a proxy. Whatever
// the proxy sent past its answer belongs to the tunnel: it is read first
// (prefixConn), by the TLS handshake for wss:// or by the upgrade for
// ws://, and what the upgrade did not read goes to the loop with the
// socket, as bytes read past the 101 do.

// proxy returns the proxy the dial goes through, nil for none.
func (d *dialState) proxy() (*url.URL, error) {
	d.phase = PhaseProxy
	f := d.opts.Proxy
	if f == nil {
		f = http.ProxyFromEnvironment
	}
	// The request as net/http's Transport would see it: http and https,
	// so that the environment's HTTP_PROXY and HTTPS_PROXY apply, and
	// http.ProxyURL or a function written for net/http works as it is.
	u := *d.u
	u.User = nil
	u.Scheme = "http"
	if strings.EqualFold(d.u.Scheme, "wss") {
		u.Scheme = "https"
	}
	req := (&http.Request{Method: http.MethodGet, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: d.opts.Header, Host: u.Host}).WithContext(d.ctx)
	p, err := f(req)
	if err != nil {
		return nil, d.failed(fmt.Errorf("choosing the proxy: %w", err))
	}
	if p == nil {
		return nil, nil
	}
	switch strings.ToLower(p.Scheme) {
	case "http", "socks5", "socks5h":
	case "https":
		if u.Scheme == "https" {
			return nil, d.failed(fmt.Errorf("wss:// through an https:// proxy (%s) is not supported: the event loops do not run TLS inside TLS; use the proxy's http:// address, which carries wss's TLS end to end", p.Redacted()))
		}
	default:
		return nil, d.failed(fmt.Errorf("unsupported proxy scheme %q in %s: want http, https, socks5 or socks5h", p.Scheme, p.Redacted()))
	}
	if p.Hostname() == "" {
		return nil, d.failed(fmt.Errorf("the proxy URL %s has no host", p.Redacted()))
	}
	return p, nil
}

// proxyAddr returns the proxy's host and port, the scheme's default port
// when the URL has none.
func proxyAddr(p *url.URL) string {
	port := p.Port()
	if port == "" {
		switch strings.ToLower(p.Scheme) {
		case "https":
			port = "443"
		case "socks5", "socks5h":
			port = "1080"
		default:
			port = "80"
		}
	}
	return net.JoinHostPort(p.Hostname(), port)
}

// tunnel opens the tunnel to the host through the proxy the socket is
// connected to. For an https:// proxy it returns the TLS to the proxy,
// which the loop then runs for the connection.
func (d *dialState) tunnel(p *url.URL) (*tlsState, error) {
	d.phase = PhaseProxy
	port := d.u.Port()
	if port == "" {
		port = "80"
		if strings.EqualFold(d.u.Scheme, "wss") {
			port = "443"
		}
	}
	host := d.u.Hostname()
	var ts *tlsState
	var err error
	switch strings.ToLower(p.Scheme) {
	case "socks5", "socks5h":
		err = d.socks5(p, host, port)
	case "https":
		cfg := d.opts.TLSConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		cfg.ServerName = p.Hostname()
		cfg.NextProtos = nil
		if ts, err = d.handshakeTLS(d.conn, cfg); err != nil {
			err = fmt.Errorf("TLS handshake with the proxy %s: %w", proxyAddr(p), err)
			break
		}
		d.stream = ts.conn
		err = d.httpConnect(p, net.JoinHostPort(host, port))
	default:
		err = d.httpConnect(p, net.JoinHostPort(host, port))
	}
	if err != nil {
		return nil, d.failed(err)
	}
	return ts, nil
}

// httpConnect asks an HTTP proxy for a tunnel to target (RFC 9110 §9.3.6)
// and reads its answer. A 2xx opens the tunnel; bytes read past the answer
// are the tunnel's first, and d.stream reads them first.
func (d *dialState) httpConnect(p *url.URL, target string) error {
	req := make([]byte, 0, 256)
	req = append(req, "CONNECT "...)
	req = append(req, target...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, target...)
	req = append(req, "\r\n"...)
	if p.User != nil {
		// RFC 9110 §11.7.2 with the Basic scheme of RFC 7617, as
		// net/http sends it.
		pass, _ := p.User.Password()
		req = append(req, "Proxy-Authorization: Basic "...)
		req = append(req, basicAuth(p.User.Username(), pass)...)
		req = append(req, "\r\n"...)
	}
	req = append(req, "\r\n"...)
	if _, err := d.stream.Write(req); err != nil {
		return fmt.Errorf("the proxy %s: %w", proxyAddr(p), err)
	}
	buf, n, err := readHeader(d.stream, d.s.opts.MaxHeaderBytes, "the proxy "+proxyAddr(p))
	if err != nil {
		return err
	}
	var r codec.Response
	if err := codec.ParseResponse(buf[:n], &r); err != nil {
		return fmt.Errorf("the proxy %s answered CONNECT with something that is not HTTP/1.x: %w", proxyAddr(p), err)
	}
	if r.Status/100 != 2 {
		return connectRefused(p, target, &r)
	}
	if len(buf) > n {
		d.stream = &prefixConn{Conn: d.stream, rest: buf[n:]}
	}
	return nil
}

// connectRefused says why a proxy did not open the tunnel.
func connectRefused(p *url.URL, target string, r *codec.Response) error {
	status := strconv.Itoa(r.Status)
	if len(r.Reason) > 0 {
		status += " " + string(r.Reason)
	} else if t := http.StatusText(r.Status); t != "" {
		status += " " + t
	}
	msg := fmt.Sprintf("the proxy %s answered CONNECT %s with %s", proxyAddr(p), target, status)
	if r.Status == http.StatusProxyAuthRequired {
		var challenge []string
		r.VisitHeaders(func(k, v []byte) {
			if strings.EqualFold(string(k), "Proxy-Authenticate") {
				challenge = append(challenge, string(v))
			}
		})
		if p.User != nil {
			msg += ": it refused the user name and password in the proxy URL"
		} else {
			msg += ": it wants credentials (put them in the proxy URL: http://user:password@host:port)"
		}
		if len(challenge) > 0 {
			msg += " (Proxy-Authenticate: " + strings.Join(challenge, ", ") + ")"
		}
	}
	return errors.New(msg)
}

// socks5 asks a SOCKS5 proxy (RFC 1928) for a connection to host:port,
// authenticating with the URL's user name and password (RFC 1929) when it
// has them. The host goes to the proxy as it is, a name or an address: the
// proxy resolves it. Every reply is read to its exact length, so nothing
// of the tunnel is read.
func (d *dialState) socks5(p *url.URL, host, port string) error {
	name := "the SOCKS5 proxy " + proxyAddr(p)
	pn, _ := strconv.ParseUint(port, 10, 16) // checked by connect
	methods := []byte{5, 1, 0}               // version 5, one method: no authentication
	var user, pass string
	if p.User != nil {
		user = p.User.Username()
		pass, _ = p.User.Password()
		if len(user) == 0 || len(user) > 255 || len(pass) > 255 {
			return fmt.Errorf("%s: the user name and the password must each be 1 to 255 bytes (RFC 1929)", name)
		}
		methods = []byte{5, 2, 0, 2} // and username/password
	}
	if _, err := d.stream.Write(methods); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var b [2]byte
	if err := d.readFull(b[:], name); err != nil {
		return err
	}
	if b[0] != 5 {
		return fmt.Errorf("%s: the answer is not SOCKS version 5 (version byte %d)", name, b[0])
	}
	switch b[1] {
	case 0:
	case 2:
		if p.User == nil {
			return fmt.Errorf("%s chose username/password authentication, which was not offered", name)
		}
		auth := make([]byte, 0, 3+len(user)+len(pass))
		auth = append(auth, 1, byte(len(user)))
		auth = append(auth, user...)
		auth = append(auth, byte(len(pass)))
		auth = append(auth, pass...)
		if _, err := d.stream.Write(auth); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := d.readFull(b[:], name); err != nil {
			return err
		}
		if b[1] != 0 {
			return fmt.Errorf("%s refused the user name and password in the proxy URL", name)
		}
	case 0xFF:
		if p.User == nil {
			return fmt.Errorf("%s wants authentication (put a user name and password in the proxy URL: socks5://user:password@host:port)", name)
		}
		return fmt.Errorf("%s accepts neither no authentication nor username/password", name)
	default:
		return fmt.Errorf("%s chose authentication method %d, which was not offered", name, b[1])
	}

	req := make([]byte, 0, 10+len(host))
	req = append(req, 5, 1, 0) // CONNECT
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is4() || ip.Is4In6() {
			req = append(req, 1)
			a := ip.Unmap().As4()
			req = append(req, a[:]...)
		} else {
			req = append(req, 4)
			a := ip.As16()
			req = append(req, a[:]...)
		}
	} else {
		if len(host) > 255 {
			return fmt.Errorf("%s: the host name is longer than SOCKS5 allows (255 bytes)", name)
		}
		req = append(req, 3, byte(len(host)))
		req = append(req, host...)
	}
	req = binary.BigEndian.AppendUint16(req, uint16(pn))
	if _, err := d.stream.Write(req); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	// VER REP RSV ATYP, then the bound address and port, whose length
	// the address type gives.
	var h [5]byte
	if err := d.readFull(h[:], name); err != nil {
		return err
	}
	if h[0] != 5 {
		return fmt.Errorf("%s: the answer is not SOCKS version 5 (version byte %d)", name, h[0])
	}
	if h[1] != 0 {
		return fmt.Errorf("%s refused CONNECT %s: %s", name, net.JoinHostPort(host, port), socksReply(h[1]))
	}
	var rest int
	switch h[3] {
	case 1:
		rest = 4 - 1 + 2
	case 4:
		rest = 16 - 1 + 2
	case 3:
		rest = int(h[4]) + 2
	default:
		return fmt.Errorf("%s: unknown address type %d in its answer", name, h[3])
	}
	var bound [257]byte
	return d.readFull(bound[:rest], name)
}

// socksReply describes a SOCKS5 reply code (RFC 1928 §6).
func socksReply(rep byte) string {
	switch rep {
	case 1:
		return "general SOCKS server failure"
	case 2:
		return "connection not allowed by ruleset"
	case 3:
		return "network unreachable"
	case 4:
		return "host unreachable"
	case 5:
		return "connection refused"
	case 6:
		return "TTL expired"
	case 7:
		return "command not supported"
	case 8:
		return "address type not supported"
	}
	return "reply code " + strconv.Itoa(int(rep))
}

// readFull reads exactly len(b) bytes of a proxy's answer.
func (d *dialState) readFull(b []byte, name string) error {
	if _, err := io.ReadFull(d.stream, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%s closed the connection in the middle of the exchange", name)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// prefixConn reads rest before reading its connection: the bytes a proxy
// sent past its answer, which belong to the tunnel.
type prefixConn struct {
	net.Conn
	rest []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// carried returns what c still holds of a proxy's extra bytes, unread.
func carried(c net.Conn) []byte {
	if pc, ok := c.(*prefixConn); ok {
		return pc.rest
	}
	return nil
}
