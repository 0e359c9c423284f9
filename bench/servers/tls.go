package servers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// TLSCert is the certificate and private key a server presents for wss://,
// PEM-encoded. Each implementation loads it with its own TLS package:
// crypto/tls for wsloop and gws, lesismal/llib's fork of it for nbio.
type TLSCert struct {
	CertPEM, KeyPEM []byte
}

// tlsImpls are the implementations that serve wss:// when
// Settings.TLS is set, each in its library's own way (see their files).
var tlsImpls = map[string]bool{"wsloop": true, "gws": true, "nbio": true}

// SupportsTLS reports whether the implementation name can serve wss://.
func SupportsTLS(name string) bool { return tlsImpls[name] }

// LoadTLSCert reads a PEM certificate (chain) and its private key from
// files.
func LoadTLSCert(certFile, keyFile string) (*TLSCert, error) {
	c, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	k, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	return &TLSCert{CertPEM: c, KeyPEM: k}, nil
}

// SelfSignedTLSCert generates, in memory, a self-signed ECDSA P-256
// certificate for 127.0.0.1, ::1 and localhost, valid for a day: what a
// bench server presents when it is given no certificate.
func SelfSignedTLSCert() (*TLSCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "wsloop bench"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &TLSCert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}, nil
}
