//go:build unix && !wsloop_portable

package engine

import (
	"reflect"
	"sync"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/netpoll"
)

// The poller of gnet's event loop, for pausing reads (readpause.go).
//
// Pausing a connection's reads means taking its socket out of the loop's
// read interest, so that the kernel's receive window fills and pushes back
// on the peer. gnet has no call for it; its poller (epoll or kqueue) is
// reached through two unexported fields, gnet's connection's loop and the
// loop's poller, and the poller's descriptor, also unexported. They are
// found once, by name and type, from the first connection that pauses;
// TestGnetPollerFound fails if a gnet release renames them. When they are
// not found, pausing falls back to not consuming what gnet reads, bounded
// (readpause.go).

const portableBuild = false

var gnetPollFields struct {
	once sync.Once
	typ  reflect.Type // *gnet.conn
	ok   bool

	loop, poller, fd uintptr
}

func findGnetPollFields(c gnet.Conn) {
	f := &gnetPollFields
	t := reflect.TypeOf(c)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return
	}
	// conn.loop: *eventloop, an unexported struct type of gnet's.
	lf, ok := t.Elem().FieldByName("loop")
	if !ok || len(lf.Index) != 1 || lf.Type.Kind() != reflect.Pointer || lf.Type.Elem().Kind() != reflect.Struct ||
		lf.Type.Elem().PkgPath() != t.Elem().PkgPath() {
		return
	}
	// eventloop.poller: *netpoll.Poller, whose fd is the epoll or kqueue
	// descriptor.
	pf, ok := lf.Type.Elem().FieldByName("poller")
	if !ok || len(pf.Index) != 1 || pf.Type != reflect.TypeFor[*netpoll.Poller]() {
		return
	}
	ff, ok := reflect.TypeFor[netpoll.Poller]().FieldByName("fd")
	if !ok || len(ff.Index) != 1 || ff.Type != reflect.TypeFor[int]() {
		return
	}
	f.typ, f.loop, f.poller, f.fd, f.ok = t, lf.Offset, pf.Offset, ff.Offset, true
}

// gnetPollerFD returns the descriptor of the poller of c's loop, or -1 when
// it cannot be found in this gnet release. Loop only.
func gnetPollerFD(c gnet.Conn) int {
	f := &gnetPollFields
	f.once.Do(func() { findGnetPollFields(c) })
	if !f.ok || reflect.TypeOf(c) != f.typ {
		return -1
	}
	p := reflect.ValueOf(c).UnsafePointer()
	loop := *(*unsafe.Pointer)(unsafe.Add(p, f.loop))
	if loop == nil {
		return -1
	}
	poller := *(*unsafe.Pointer)(unsafe.Add(loop, f.poller))
	if poller == nil {
		return -1
	}
	return *(*int)(unsafe.Add(poller, f.fd))
}
