package enginetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine/internal/tlsbuf"
)

// Certificate returns a new self-signed ECDSA P-256 certificate for
// 127.0.0.1, ::1 and localhost, valid for a day, with a random serial
// number, and the certificate in PEM. It can serve as its own root: a client
// trusts it with a pool made from the PEM, or skips verification.
func Certificate(tb testing.TB) (cert tls.Certificate, certPEM []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "wsloop test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TLSConfig returns a server TLS configuration with a new [Certificate],
// for engine.Options.TLSConfig in a test.
func TLSConfig(tb testing.TB) *tls.Config {
	tb.Helper()
	cert, _ := Certificate(tb)
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// ForceTLSBridge makes the servers of this process serve wss:// as they do
// when their check of crypto/tls fails (a Go release that changed what the
// event loops rely on): every wss connection, accepted or dialed, goes
// through a bridge of two goroutines, and the server logs once why. It is
// for testing that fallback; call restore to end it. A server decides at
// its first wss connection and keeps its road after restore. It changes
// process-wide state: do not use it while parallel tests run.
func ForceTLSBridge() (restore func()) {
	return tlsbuf.Force(errors.New("forced by enginetest.ForceTLSBridge"))
}
