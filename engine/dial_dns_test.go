package engine_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
)

// testResolver is a *net.Resolver that answers from names, in the order
// given, as a DNS server would: the seam through which a test hands Dial
// (and the net.Dialer under it) addresses of its own choosing, such as a
// name that is not loopback but leads there, or a silent address first.
// Names not in the map get NXDOMAIN. It speaks DNS over an in-memory pipe
// (the stream form, RFC 1035 §4.2.2), so no socket and no real resolver is
// involved; /etc/hosts is still read first, as Go's resolver always does.
func testResolver(names map[string][]netip.Addr) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		client, server := net.Pipe()
		go serveDNS(server, names)
		return client, nil
	}}
}

// serveDNS answers the queries that come on c, each behind its two-byte
// length, until c is closed.
func serveDNS(c net.Conn, names map[string][]netip.Addr) {
	defer c.Close()
	for {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		a := dnsAnswer(q, names)
		if a == nil {
			return
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...)); err != nil {
			return
		}
	}
}

// dnsAnswer answers one query message (RFC 1035 §4.1) for A (1) and AAAA
// (28) questions, or returns nil for a message it cannot read.
func dnsAnswer(q []byte, names map[string][]netip.Addr) []byte {
	if len(q) < 12 {
		return nil
	}
	i := 12
	var labels []string
	for {
		if i >= len(q) {
			return nil
		}
		n := int(q[i])
		i++
		if n == 0 {
			break
		}
		if n&0xC0 != 0 || i+n > len(q) {
			return nil
		}
		labels = append(labels, string(q[i:i+n]))
		i += n
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i:])
	question := q[12 : i+4]
	addrs, found := names[strings.ToLower(strings.Join(labels, "."))]
	var answers [][]byte
	for _, a := range addrs {
		if (qtype == 1 && a.Is4()) || (qtype == 28 && a.Is6() && !a.Is4In6()) {
			answers = append(answers, a.AsSlice())
		}
	}
	out := make([]byte, 12, 12+len(question)+len(answers)*28)
	copy(out, q[:2])       // the query's ID
	out[2] = 0x84 | q[2]&1 // a response, authoritative; RD as asked
	out[3] = 0x80          // recursion available, no error
	if !found {
		out[3] |= 3 // NXDOMAIN
	}
	binary.BigEndian.PutUint16(out[4:], 1)
	binary.BigEndian.PutUint16(out[6:], uint16(len(answers)))
	out = append(out, question...)
	for _, a := range answers {
		out = append(out, 0xC0, 12) // the name: a pointer to the question's
		out = binary.BigEndian.AppendUint16(out, qtype)
		out = binary.BigEndian.AppendUint16(out, 1) // class IN
		out = binary.BigEndian.AppendUint32(out, 60)
		out = binary.BigEndian.AppendUint16(out, uint16(len(a)))
		out = append(out, a...)
	}
	return out
}
