package main

import (
	"crypto/tls"
	"testing"

	"github.com/wsloop/wsloop/engine/enginetest"
)

// testTLSConfig returns a server TLS configuration with a self-signed
// certificate for 127.0.0.1 and localhost, made for the test.
func testTLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	return enginetest.TLSConfig(t)
}
