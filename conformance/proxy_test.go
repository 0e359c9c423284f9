package conformance

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// TestProxyRoadClients runs on the PROXY road only: 200 connections from
// the balancer's address, each behind its own header (versions 1 and 2 in
// turn), echo a message, and every one of them reports the client its header
// named, never the balancer.
func TestProxyRoadClients(t *testing.T) {
	if road != roadProxy || addrFromEnv() {
		t.Skip("PROXY road only")
	}
	addr, h := startEchoHooks(t, engineOptions())
	const n = 200
	for i := range n {
		c, err := dialErr(t, &net.Dialer{Timeout: 5 * time.Second}, addr, nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		msg := text(fmt.Sprintf("client %d", i))
		if err := c.writeFrame(msg); err != nil {
			t.Fatal(err)
		}
		if got, err := c.readMessage(5 * time.Second); err != nil || !equalFrame(msg, got) {
			t.Fatalf("connection %d: echo %v, %v", i, got, err)
		}
		c.conn.Close()
	}
	if p, np := h.proxied.Load(), h.notProxied.Load(); p != n || np != 0 {
		t.Fatalf("%d connections reported their header's client, %d the balancer; want %d and 0", p, np, n)
	}
}
