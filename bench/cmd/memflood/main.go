// Command memflood measures what unfinished large messages cost a server: N
// connections each send most of one binary message in fragments and never
// finish it, and the server's resident memory is read before, at its peak
// and at the end. It answers issue 11's question for examples/echo (or any
// server speaking plain ws://): is the memory held for inbound messages
// bounded server-wide?
//
//	go build -o bin/echo ../examples/echo
//	go run ./cmd/memflood -server bin/echo -n 300 -per-conn 12 -frag 1
//
// The server is started as a child process on a free loopback port with the
// extra flags given after "--"; memflood reports its RSS growth, how many
// connections were closed and with which codes.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsloop/wsloop/codec"
)

func main() {
	server := flag.String("server", "bin/echo", "server binary to start (it must take -addr host:port)")
	addr := flag.String("addr", "127.0.0.1:9411", "address the server listens on")
	n := flag.Int("n", 300, "connections")
	perConn := flag.Int("per-conn", 12, "MiB each connection sends of its never-finished message")
	frag := flag.Int("frag", 1, "fragment size in MiB")
	hold := flag.Duration("hold", 3*time.Second, "how long to hold the connections once everything is sent")
	flag.Parse()

	cmd := exec.Command(*server, append([]string{"-addr", *addr}, flag.Args()...)...)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		fail("start server: %v", err)
	}
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	waitListening(*addr)
	base := rssKiB(pid, "VmRSS")

	payload := bytes.Repeat([]byte("memflood"), (*frag<<20)/8)
	var closes sync.Map // code -> *atomic.Int64
	var sentMiB atomic.Int64
	var wg sync.WaitGroup
	conns := make([]net.Conn, *n)
	for i := range conns {
		c, br, err := dial(*addr)
		if err != nil {
			fail("connection %d: %v", i, err)
		}
		conns[i] = c
		wg.Add(1)
		go func() { // one goroutine per client connection: this is the load, not the server
			defer wg.Done()
			code := make(chan uint16, 1)
			go func() { code <- readClose(br) }()
			mask := [4]byte{1, 2, 3, 4}
			var frame []byte
			for sent := 0; sent < *perConn; sent += *frag {
				op := codec.OpContinuation
				if sent == 0 {
					op = codec.OpBinary
				}
				frame = codec.AppendMaskedFrame(frame[:0], false, op, 0, mask, payload)
				if _, err := c.Write(frame); err != nil {
					break
				}
				sentMiB.Add(int64(*frag))
			}
			select {
			case cc := <-code:
				v, _ := closes.LoadOrStore(cc, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			case <-time.After(*hold + 5*time.Second):
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(*hold):
	}
	time.Sleep(*hold) // let the server settle with everything held
	peak := rssKiB(pid, "VmHWM")
	held := rssKiB(pid, "VmRSS")
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("server %s: %d connections x %d MiB unfinished (fragments of %d MiB), %d MiB sent\n",
		*server, *n, *perConn, *frag, sentMiB.Load())
	fmt.Printf("RSS: %.0f MiB before, %.0f MiB held (+%.0f MiB), peak %.0f MiB (+%.0f MiB)\n",
		float64(base)/1024, float64(held)/1024, float64(held-base)/1024, float64(peak)/1024, float64(peak-base)/1024)
	var parts []string
	closes.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("%d: %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	fmt.Printf("closes by code (0: none within the hold): {%s}\n", strings.Join(parts, ", "))
}

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "memflood: "+f+"\n", a...)
	os.Exit(1)
}

func waitListening(addr string) {
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	fail("server not listening on %s", addr)
}

// dial opens a WebSocket connection and returns it with a reader positioned
// after the 101 response.
func dial(addr string) (net.Conn, *bufio.Reader, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	var k [16]byte
	_, _ = rand.Read(k[:])
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", addr, base64.StdEncoding.EncodeToString(k[:]))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, nil, fmt.Errorf("upgrade: %s", resp.Status)
	}
	return c, br, nil
}

// readClose reads until a close frame (its code) or the end (0).
func readClose(br *bufio.Reader) uint16 {
	var dec codec.Decoder
	dec.Client = true
	var in []byte
	buf := make([]byte, 4096)
	for {
		n, err := br.Read(buf)
		if err != nil {
			return 0
		}
		in = append(in, buf[:n]...)
		for {
			m, ev, err := dec.Decode(in)
			if err != nil {
				return 0
			}
			in = in[m:]
			if ev.Kind == codec.EventControl && ev.Op == codec.OpClose {
				return ev.CloseCode
			}
			if m == 0 || ev.Kind == codec.EventNone {
				break
			}
		}
	}
}

// rssKiB reads a Vm field of a process's status, in KiB.
func rssKiB(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}
