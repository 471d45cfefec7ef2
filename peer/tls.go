package peer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// Node identity: a node's certificate carries its node id as the subject
// common name, signed by the site CA. Both sides of a connection present one
// and verify the other's against the CA (mutual TLS 1.3).

// ErrNoPeerCert means the other side presented no verified certificate.
var ErrNoPeerCert = errors.New("peer: no verified peer certificate")

// CertPair is a PEM-encoded certificate and its private key.
type CertPair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed CA valid for validity.
func NewCA(name string, validity time.Duration) (CertPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertPair{}, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"mreplfs"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return CertPair{}, fmt.Errorf("create CA certificate: %w", err)
	}
	return encodePair(der, key)
}

// NewNodeCert makes a certificate for node (its common name) signed by ca,
// usable as both TLS client and server, valid for the given hosts (IP
// addresses or DNS names) as a server.
func NewNodeCert(ca CertPair, node string, hosts []string, validity time.Duration) (CertPair, error) {
	if node == "" {
		return CertPair{}, errors.New("peer: empty node id")
	}
	caCert, caKey, err := ca.parse()
	if err != nil {
		return CertPair{}, fmt.Errorf("parse CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertPair{}, fmt.Errorf("generate node key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: node, Organization: []string{"mreplfs"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{node},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return CertPair{}, fmt.Errorf("create node certificate: %w", err)
	}
	return encodePair(der, key)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func encodePair(der []byte, key *ecdsa.PrivateKey) (CertPair, error) {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return CertPair{}, fmt.Errorf("marshal key: %w", err)
	}
	return CertPair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	}, nil
}

func (p CertPair) parse() (*x509.Certificate, any, error) {
	pair, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	return cert, pair.PrivateKey, nil
}

// TLSFiles names a node's certificate, key and the CA it trusts.
type TLSFiles struct {
	Cert string
	Key  string
	CA   string
}

func (f TLSFiles) load() (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load certificate %s / key %s: %w", f.Cert, f.Key, err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("CA file %s holds no PEM certificate", f.CA)
	}
	return cert, pool, nil
}

// ServerConfig is the receiver's TLS config: it requires and verifies a
// client certificate signed by the CA.
func (f TLSFiles) ServerConfig() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// ClientConfig is the sender's TLS config for dialling the node expectNode:
// the server's certificate must be signed by the CA and name expectNode.
func (f TLSFiles) ClientConfig(expectNode string) (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   expectNode,
	}, nil
}

// PeerNode returns the node id of the verified certificate the other side
// presented on an established connection.
func PeerNode(cs tls.ConnectionState) (string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", ErrNoPeerCert
	}
	cn := cs.VerifiedChains[0][0].Subject.CommonName
	if cn == "" {
		return "", fmt.Errorf("%w: certificate has no common name", ErrNoPeerCert)
	}
	return cn, nil
}
