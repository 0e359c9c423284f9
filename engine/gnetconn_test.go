package engine

import (
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"unsafe"
)

// gnetConnState reads the fields trimGnetConn rewrites from wc's gnet
// connection. Only the loop writes them; the caller reads after OnOpen,
// which the loop ran after it trimmed them.
func gnetConnState(wc *wsConn) (remote gnetSockaddr, safe *any, local, peer net.Addr) {
	f := &gnetConnFields
	p := (*[2]unsafe.Pointer)(unsafe.Pointer(&wc.c))[1] // the *gnet.conn in the interface
	remote = *(*gnetSockaddr)(unsafe.Add(p, f.remote))
	safe = (*atomic.Pointer[any])(unsafe.Add(p, f.safeCtx)).Load()
	local = *(*net.Addr)(unsafe.Add(p, f.local))
	peer = *(*net.Addr)(unsafe.Add(p, f.peer))
	return
}

// Connections accepted on one address share the loop's local address and
// keep neither gnet's sockaddr of the peer nor a SafeContext box, and
// their addresses still read back as the client sees them. If gnet's
// connection type changes, TestGnetConnFieldsFound names the cause.
func TestGnetConnTrimmed(t *testing.T) {
	skipGnetConnOnWindows(t)
	h := &echoRecorder{opened: make(chan *wsConn, 3)}
	srv := startLocal(t, h, Options{EventLoops: 1})
	var clients []net.Conn
	var conns []*wsConn
	for i := 0; i < 3; i++ {
		c, _ := upgradeLocal(t, srv.Addr().String())
		clients = append(clients, c)
		conns = append(conns, <-h.opened)
	}
	if !gnetConnFields.ok {
		t.Fatal("gnet's connection fields were not found: connections keep their extra address bytes (engine/gnetconn.go)")
	}
	var firstLocal net.Addr
	for i, wc := range conns {
		remote, safe, local, peer := gnetConnState(wc)
		if remote != nil {
			t.Errorf("conn %d: gnet keeps the peer's sockaddr %v", i, remote)
		}
		if safe != nil {
			t.Errorf("conn %d: gnet keeps a SafeContext box holding %v", i, *safe)
		}
		if i == 0 {
			firstLocal = local
		} else if local != firstLocal {
			t.Errorf("conn %d: local address %p is not the loop's shared %p", i, local, firstLocal)
		}
		if got, want := wc.LocalAddr().String(), clients[i].RemoteAddr().String(); got != want {
			t.Errorf("conn %d: LocalAddr %s, want %s", i, got, want)
		}
		if got, want := wc.RemoteAddr().String(), clients[i].LocalAddr().String(); got != want {
			t.Errorf("conn %d: RemoteAddr %s, want %s", i, got, want)
		}
		if ta, ok := peer.(*net.TCPAddr); !ok || len(ta.IP) != net.IPv4len || cap(ta.IP) != net.IPv4len {
			t.Errorf("conn %d: remote address %#v is not a compact IPv4 address", i, peer)
		}
	}
}

func TestGnetConnFieldsFound(t *testing.T) {
	skipGnetConnOnWindows(t)
	h := &echoRecorder{opened: make(chan *wsConn, 1)}
	srv := startLocal(t, h, Options{})
	upgradeLocal(t, srv.Addr().String())
	<-h.opened
	if !gnetConnFields.ok {
		t.Fatalf("fields remote, localAddr, remoteAddr, safeCtx, isDatagram not found with their types in %v (engine/gnetconn.go)", gnetConnFields.typ)
	}
}

// skipGnetConnOnWindows skips a test of the rewrite where it does not
// happen by design (gnetconn_windows.go).
func skipGnetConnOnWindows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("gnet's Windows connection keeps its net.Conn and no sockaddr: nothing is rewritten there")
	}
}

// A loop shares at most localsPerLoop local addresses, however many a
// client picks (every address of 127.0.0.0/8 reaches a server listening
// on all of them); past that each connection gets its own compact copy.
func TestSharedLocalBounded(t *testing.T) {
	lp := &loop{}
	for i := 0; i < 3*localsPerLoop; i++ {
		in := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+1)), Port: 8080}
		got := lp.sharedLocal(in)
		if got.String() != in.String() {
			t.Fatalf("sharedLocal(%v) = %v", in, got)
		}
		if again := lp.sharedLocal(&net.TCPAddr{IP: in.IP, Port: 8080}); i < localsPerLoop && again != got {
			t.Errorf("%v: a second connection did not get the shared address", in)
		}
	}
	if len(lp.locals) != localsPerLoop {
		t.Errorf("the loop keeps %d local addresses, want %d", len(lp.locals), localsPerLoop)
	}
	// Addresses with a zone, and other address types, are left alone.
	zoned := &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 80, Zone: "eth0"}
	if got := lp.sharedLocal(zoned); got != zoned {
		t.Errorf("a zoned address was replaced by %v", got)
	}
	unixAddr := &net.UnixAddr{Name: "/x", Net: "unix"}
	if got := compactAddr(unixAddr); got != unixAddr {
		t.Errorf("a unix address was replaced by %v", got)
	}
	v6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443}
	if got := compactAddr(v6).(*net.TCPAddr); !got.IP.Equal(v6.IP) || got.Port != 443 || fmt.Sprint(got) != fmt.Sprint(v6) {
		t.Errorf("compactAddr(%v) = %v", v6, got)
	}
}
