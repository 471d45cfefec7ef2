package peer

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writePair writes p as name.crt/name.key in dir.
func writePair(t testing.TB, dir, name string, p CertPair) (cert, key string) {
	t.Helper()
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(cert, p.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, p.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

type tlsSite struct {
	dir string
	ca  CertPair
}

func newSite(t testing.TB, name string) tlsSite {
	t.Helper()
	ca, err := NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writePair(t, dir, "ca", ca)
	return tlsSite{dir, ca}
}

func (s tlsSite) node(t testing.TB, node string) TLSFiles {
	t.Helper()
	p, err := NewNodeCert(s.ca, node, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, k := writePair(t, s.dir, node, p)
	return TLSFiles{Cert: c, Key: k, CA: filepath.Join(s.dir, "ca.crt")}
}

// handshake runs a real TCP+TLS handshake on loopback and returns the node
// ids each side verified (or the errors).
func handshake(t *testing.T, server *tls.Config, client *tls.Config) (seenByServer string, serverErr, clientErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		node string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- res{"", err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			ch <- res{"", err}
			return
		}
		n, err := PeerNode(tc.ConnectionState())
		ch <- res{n, err}
	}()
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(&d, "tcp", ln.Addr().String(), client)
	if err == nil {
		// TLS 1.3: the client learns of a rejected client cert on first read.
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if errors.Is(err, net.ErrClosed) || err != nil && err.Error() == "EOF" {
			err = nil
		}
		c.Close()
	}
	r := <-ch
	return r.node, r.err, err
}

func TestMutualTLS(t *testing.T) {
	site := newSite(t, "site CA")
	a, b := site.node(t, "srv-a"), site.node(t, "srv-b")

	srv, err := b.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := a.ClientConfig("srv-b")
	if err != nil {
		t.Fatal(err)
	}
	node, serr, _ := handshake(t, srv, cli)
	if serr != nil || node != "srv-a" {
		t.Fatalf("valid pair: server saw node %q, err %v; want srv-a", node, serr)
	}

	t.Run("client cert from another CA is refused", func(t *testing.T) {
		other := newSite(t, "other CA").node(t, "srv-a")
		ocli, err := other.ClientConfig("srv-b")
		if err != nil {
			t.Fatal(err)
		}
		ocli.RootCAs = cli.RootCAs // trusts the real server, presents a foreign cert
		_, serr, _ := handshake(t, srv, ocli)
		if serr == nil {
			t.Fatal("server accepted a certificate from another CA")
		}
	})
	t.Run("no client cert is refused", func(t *testing.T) {
		nocert := cli.Clone()
		nocert.Certificates = nil
		_, serr, _ := handshake(t, srv, nocert)
		if serr == nil {
			t.Fatal("server accepted a client without a certificate")
		}
	})
	t.Run("client refuses a server that is not the expected node", func(t *testing.T) {
		cliC, err := a.ClientConfig("srv-c")
		if err != nil {
			t.Fatal(err)
		}
		_, _, cerr := handshake(t, srv, cliC)
		if cerr == nil {
			t.Fatal("client accepted srv-b's certificate when dialling srv-c")
		}
	})
}

func TestTLSFilesErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not pem"), 0o600)
	if _, err := (TLSFiles{Cert: bad, Key: bad, CA: bad}).ServerConfig(); err == nil {
		t.Fatal("garbage cert files accepted")
	}
	site := newSite(t, "ca")
	f := site.node(t, "n")
	f.CA = bad
	if _, err := f.ClientConfig("x"); err == nil {
		t.Fatal("garbage CA file accepted")
	}
	if _, err := NewNodeCert(site.ca, "", nil, time.Hour); err == nil {
		t.Fatal("empty node id accepted")
	}
}
