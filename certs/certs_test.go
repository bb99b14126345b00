package certs

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"clb/certs/certstest"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	good := ca.Issue(t, certstest.Leaf{Name: "clb"})
	other := ca.Issue(t, certstest.Leaf{Name: "other"})
	expired := ca.Issue(t, certstest.Leaf{Name: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	future := ca.Issue(t, certstest.Leaf{Name: "new", NotBefore: time.Now().Add(time.Hour)})
	cert, key := good.Write(t, dir, "good")
	_, otherKey := other.Write(t, dir, "other")
	oldCert, oldKey := expired.Write(t, dir, "old")
	newCert, newKey := future.Write(t, dir, "new")
	caFile := ca.WriteCA(t, dir, "ca")
	garbage := filepath.Join(dir, "garbage.pem")
	certstest.WriteFile(t, garbage, []byte("not PEM\n"))
	unreadable := filepath.Join(dir, "unreadable.pem")
	certstest.WriteFile(t, unreadable, good.CertPEM)
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		files     Files
		wantField string // "" for no error
		wantErr   string
	}{
		{name: "good", files: Files{Cert: cert, Key: key}},
		{name: "good with CAs", files: Files{Cert: cert, Key: key, ClientCA: caFile, InstanceCA: caFile}},
		{name: "no cert, no key: instance trust only", files: Files{InstanceCA: caFile}, wantField: "-"},
		{name: "no cert", files: Files{Key: key}, wantField: "cert", wantErr: "no certificate file"},
		{name: "no key", files: Files{Cert: cert}, wantField: "key", wantErr: "no key file"},
		{name: "missing cert", files: Files{Cert: filepath.Join(dir, "nope.pem"), Key: key}, wantField: "cert", wantErr: "no such file"},
		{name: "missing key", files: Files{Cert: cert, Key: filepath.Join(dir, "nope.key")}, wantField: "key", wantErr: "no such file"},
		{name: "cert not PEM", files: Files{Cert: garbage, Key: key}, wantField: "cert", wantErr: "no PEM CERTIFICATE"},
		{name: "key not PEM", files: Files{Cert: cert, Key: garbage}, wantField: "key", wantErr: "no PEM private key"},
		{name: "key of another certificate", files: Files{Cert: cert, Key: otherKey}, wantField: "key", wantErr: "does not match"},
		{name: "expired", files: Files{Cert: oldCert, Key: oldKey}, wantField: "cert", wantErr: "expired"},
		{name: "not yet valid", files: Files{Cert: newCert, Key: newKey}, wantField: "cert", wantErr: "not valid before"},
		{name: "client CA not PEM", files: Files{Cert: cert, Key: key, ClientCA: garbage}, wantField: "client_ca", wantErr: "no PEM"},
		{name: "instance CA missing", files: Files{Cert: cert, Key: key, InstanceCA: filepath.Join(dir, "nope")}, wantField: "instance_ca", wantErr: "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Load(tc.files, time.Now())
			if tc.wantField == "-" {
				if err != nil || m.Leaf() != nil || m.instanceRoots == nil {
					t.Fatalf("Load: %v, %v", m, err)
				}
				return
			}
			if tc.wantField == "" {
				if err != nil || m.Leaf().Subject.CommonName != "clb" {
					t.Fatalf("Load: %v, %v", m, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Field != tc.wantField || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Load: %v (%#v); want a %s error saying %q", err, e, tc.wantField, tc.wantErr)
			}
		})
	}
	if os.Geteuid() != 0 { // root reads anything
		_, err := Load(Files{Cert: unreadable, Key: key}, time.Now())
		var e *Error
		if !errors.As(err, &e) || e.Field != "cert" || !errors.Is(err, os.ErrPermission) {
			t.Errorf("unreadable cert: %v", err)
		}
	}
}

// TestStoreSwap: a connection set up before a swap keeps working with the
// old certificate; one set up after gets the new one; with a client CA,
// a client without a certificate is refused and one with a certificate
// of the CA is served.
func TestStoreSwap(t *testing.T) {
	ca := certstest.NewCA(t, "test CA")
	dir := t.TempDir()
	load := func(name, clientCA string) *Material {
		cert, key := ca.Issue(t, certstest.Leaf{Name: name}).Write(t, dir, name)
		m, err := Load(Files{Cert: cert, Key: key, ClientCA: clientCA}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	store := NewStore(load("first", ""))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", store.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // an echo server, a line at a time
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	dial := func(cfg *tls.Config) (*tls.Conn, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), cfg)
		if err != nil {
			return nil, err
		}
		// TLS 1.3 tells the client of a refused certificate after the
		// handshake: an echo proves the server took it.
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			c.Close()
			return nil, err
		}
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	client := store.ClientConfig("127.0.0.1")
	client.RootCAs = ca.Pool
	old, err := dial(client)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if got := old.ConnectionState().PeerCertificates[0].Subject.CommonName; got != "first" {
		t.Fatalf("first connection got %q", got)
	}

	store.Swap(load("second", ca.WriteCA(t, dir, "ca")))
	if _, err := dial(ca.ClientConfig()); err == nil {
		t.Fatal("a client without a certificate was served, with client_ca set")
	}
	withCert := ca.ClientConfig()
	withCert.Certificates = []tls.Certificate{ca.Issue(t, certstest.Leaf{Name: "phone"}).TLS}
	c, err := dial(withCert)
	if err != nil {
		t.Fatalf("a client with a certificate of client_ca: %v", err)
	}
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0].Subject.CommonName; got != "second" {
		t.Errorf("connection after the swap got %q, want second", got)
	}
	// The old connection goes on.
	r := bufio.NewReader(old)
	for i := range 3 {
		if _, err := io.WriteString(old, "again\n"); err != nil {
			t.Fatalf("old connection, write %d: %v", i, err)
		}
		if line, err := r.ReadString('\n'); err != nil || line != "again\n" {
			t.Fatalf("old connection, read %d: %q, %v", i, line, err)
		}
	}
}

func TestMinVersion(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint16
		wantErr bool
	}{{in: "", want: tls.VersionTLS12}, {in: "1.2", want: tls.VersionTLS12}, {in: "1.3", want: tls.VersionTLS13}, {in: "1.1", wantErr: true}, {in: "1.0", wantErr: true}} {
		got, err := ParseVersion(tc.in)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("ParseVersion(%q) = %v, %v", tc.in, got, err)
		}
	}
	// A TLS 1.2-only client is refused by a store set to 1.3.
	ca := certstest.NewCA(t, "test CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, certstest.Leaf{Name: "clb"}).Write(t, dir, "clb")
	m, err := Load(Files{Cert: cert, Key: key, MinVersion: tls.VersionTLS13}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", NewStore(m).ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	old := ca.ClientConfig()
	old.MaxVersion = tls.VersionTLS12
	if c, err := tls.Dial("tcp", ln.Addr().String(), old); err == nil {
		c.Close()
		t.Error("a TLS 1.2 client was served with min_version 1.3")
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), ca.ClientConfig())
	if err != nil {
		t.Fatalf("TLS 1.3 client: %v", err)
	}
	c.Close()
}
