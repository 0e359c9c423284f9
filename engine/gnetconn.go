package engine

import (
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
)

// What gnet's connection keeps that an idle WebSocket does not need.
//
// Every socket reaches a loop through Client.EnrollContext (accept.go),
// which builds gnet's connection from a net.Conn and keeps, for the
// connection's life:
//
//   - the net.Conn's local address: a *net.TCPAddr whose IP points into
//     the syscall.Sockaddr Go's accept decoded it from (~80 B), although
//     every connection accepted on one listener address has the same one;
//   - the net.Conn's remote address, built the same way (~80 B);
//   - a unix.Sockaddr of the peer (32-48 B) that gnet reads only for UDP;
//   - a box for its SafeContext (16 B), holding nil or wsloop's adoption
//     record, which wsloop never reads back.
//
// That is about a quarter of an idle connection's live heap. None of the
// fields is exported. When they are found by name and type in gnet's
// connection (as with crypto/tls in tls.go), the loop that registers a TCP
// connection rewrites them before anything else sees it: the local address
// becomes one shared per loop (at most localsPerLoop distinct ones; past
// that each connection keeps a compact copy), the remote address a compact
// copy of itself, the sockaddr and the box nil. gnet reads these fields
// only on the loop (release, LocalAddr, RemoteAddr), and release treats nil
// and a zone-less address as it treats its own. When they are not found
// (another gnet release), nothing is rewritten and connections keep the
// bytes; TestGnetConnFieldsFound says so. On Windows gnet's connection is
// another type, without these bytes to save (gnetconn_windows.go): the
// fields are not found there, by design.

// gnetConnFields holds the offsets of the fields of gnet's connection
// type, found once from the first connection a loop registers.
var gnetConnFields struct {
	once sync.Once
	typ  reflect.Type // *gnet.conn
	ok   bool

	remote, local, peer, safeCtx, isDatagram uintptr
}

// localsPerLoop bounds the shared local addresses a loop keeps. A server
// listening on every address is reached on as many local addresses as the
// machine has (more on 127.0.0.0/8, which a local client can pick freely),
// so the table must not grow with what clients choose.
const localsPerLoop = 8

// findGnetConnFields looks the fields up in c's dynamic type.
func findGnetConnFields(c gnet.Conn) {
	f := &gnetConnFields
	t := reflect.TypeOf(c)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return
	}
	st := t.Elem()
	field := func(name string, want reflect.Type) (uintptr, bool) {
		sf, ok := st.FieldByName(name)
		if !ok || len(sf.Index) != 1 || sf.Type != want {
			return 0, false
		}
		return sf.Offset, true
	}
	addrT := reflect.TypeFor[net.Addr]()
	var ok [5]bool
	f.remote, ok[0] = field("remote", reflect.TypeFor[gnetSockaddr]())
	f.local, ok[1] = field("localAddr", addrT)
	f.peer, ok[2] = field("remoteAddr", addrT)
	f.safeCtx, ok[3] = field("safeCtx", reflect.TypeFor[atomic.Pointer[any]]())
	f.isDatagram, ok[4] = field("isDatagram", reflect.TypeFor[bool]())
	f.typ = t
	f.ok = ok == [5]bool{true, true, true, true, true}
}

// trimGnetConn rewrites what gnet keeps of a TCP connection c, on c's loop
// before OnOpen: see the comment at the top of this file. client is true
// for a dialed connection, whose local address is its own (an ephemeral
// port), never shared. It reports whether it did.
func (lp *loop) trimGnetConn(c gnet.Conn, client bool) bool {
	f := &gnetConnFields
	f.once.Do(func() { findGnetConnFields(c) })
	if !f.ok || reflect.TypeOf(c) != f.typ {
		return false
	}
	p := reflect.ValueOf(c).UnsafePointer()
	if *(*bool)(unsafe.Add(p, f.isDatagram)) {
		return false
	}
	*(*gnetSockaddr)(unsafe.Add(p, f.remote)) = nil
	(*atomic.Pointer[any])(unsafe.Add(p, f.safeCtx)).Store(nil)
	local := (*net.Addr)(unsafe.Add(p, f.local))
	if client {
		*local = compactAddr(*local)
	} else {
		*local = lp.sharedLocal(*local)
	}
	peer := (*net.Addr)(unsafe.Add(p, f.peer))
	*peer = compactAddr(*peer)
	return true
}

// sharedLocal returns the loop's copy of a, adding one while there are
// fewer than localsPerLoop, or a compact copy of a past that.
func (lp *loop) sharedLocal(a net.Addr) net.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta.Zone != "" {
		return a
	}
	for _, l := range lp.locals {
		if l.Port == ta.Port && l.IP.Equal(ta.IP) {
			return l
		}
	}
	c := compactAddr(a)
	if len(lp.locals) < localsPerLoop {
		lp.locals = append(lp.locals, c.(*net.TCPAddr))
	}
	return c
}

// compactAddr returns a TCP address with no zone as a new *net.TCPAddr
// whose IP is 4 bytes for IPv4 (16 for IPv6) of its own, so that it no
// longer keeps the sockaddr Go decoded it from. Anything else is returned
// as it is.
func compactAddr(a net.Addr) net.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta.Zone != "" {
		return a
	}
	ip := ta.IP
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return &net.TCPAddr{IP: append(net.IP(make([]byte, 0, len(ip))), ip...), Port: ta.Port}
}

// setGnetAddrs makes gnet's connection c report remote and local, the
// client's addresses from a PROXY protocol header (proxyproto.go), in place of
// the balancer's: the local one shared per loop like any other. It reports
// whether it could, which it can wherever trimGnetConn can. Loop only.
func (lp *loop) setGnetAddrs(c gnet.Conn, remote, local *net.TCPAddr) bool {
	f := &gnetConnFields
	f.once.Do(func() { findGnetConnFields(c) })
	if !f.ok || reflect.TypeOf(c) != f.typ {
		return false
	}
	p := reflect.ValueOf(c).UnsafePointer()
	*(*net.Addr)(unsafe.Add(p, f.peer)) = remote
	*(*net.Addr)(unsafe.Add(p, f.local)) = lp.sharedLocal(local)
	return true
}
