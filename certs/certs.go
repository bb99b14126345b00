// Package certs owns clb's TLS material (SPEC section 6a): the certificate
// chain and key clients see, the optional CA that client certificates must
// be signed by, and the roots clb trusts when it dials instances over TLS.
//
// Load reads and checks one set of files (readable PEM, a key that matches
// the certificate, a certificate valid now); a Store publishes the set in
// force with an atomic pointer, so that a reload swaps it at once. The
// tls.Configs a Store hands out read the pointer at every handshake: a new
// connection gets the new certificate, an established one keeps going with
// the one it was set up with, and nothing is closed by a reload.
//
// The same Store serves every TLS listener (SIP tls://, HTTPS, and later
// wss://): each asks ServerConfig for its own ALPN protocols.
//
// Concurrency: a Material is immutable; a Store is safe for concurrent use.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// Files name the PEM files of one set of TLS material.
type Files struct {
	// Cert is the certificate chain, leaf first. Required.
	Cert string
	// Key is the leaf's private key (PKCS #1, PKCS #8 or SEC 1). Required.
	Key string
	// MinVersion is the lowest TLS version accepted and offered:
	// tls.VersionTLS12 or tls.VersionTLS13; 0 means TLS 1.2.
	MinVersion uint16
	// ClientCA, if set, is a bundle of CA certificates: every client must
	// then present a certificate signed by one of them.
	ClientCA string
	// InstanceCA, if set, is the bundle of CA certificates that instances'
	// certificates are verified against when clb dials tls:// or https://
	// instances; empty means the system's roots.
	InstanceCA string
}

// Error is a problem with one of the files. Field is the Files field it
// concerns, as the configuration names it: "cert", "key", "client_ca" or
// "instance_ca".
type Error struct {
	Field string
	Path  string
	Err   error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Material is one loaded, checked set of TLS material.
type Material struct {
	cert          tls.Certificate // Leaf set
	clientCAs     *x509.CertPool  // nil: no client certificates asked for
	instanceRoots *x509.CertPool  // nil: the system's roots
	minVersion    uint16
}

// Load reads the files and checks them: each readable, the certificate and
// key PEM that match each other, the leaf valid at now (not expired, not
// before its start), the CA bundles holding at least one certificate. The
// error is an *Error naming the first file at fault.
//
// With neither Cert nor Key, the Material has no certificate: it can dial
// instances (ClientConfig) but serves no handshake.
func Load(f Files, now time.Time) (*Material, error) {
	m := &Material{minVersion: f.MinVersion}
	if m.minVersion == 0 {
		m.minVersion = tls.VersionTLS12
	}
	var err error
	if m.clientCAs, err = loadPool(f.ClientCA, "client_ca"); err != nil {
		return nil, err
	}
	if m.instanceRoots, err = loadPool(f.InstanceCA, "instance_ca"); err != nil {
		return nil, err
	}
	if f.Cert == "" && f.Key == "" {
		return m, nil
	}
	if m.cert, err = loadPair(f, now); err != nil {
		return nil, err
	}
	return m, nil
}

func loadPair(f Files, now time.Time) (tls.Certificate, error) {
	if f.Cert == "" {
		return tls.Certificate{}, &Error{"cert", "", errors.New("no certificate file given")}
	}
	if f.Key == "" {
		return tls.Certificate{}, &Error{"key", "", errors.New("no key file given")}
	}
	var none tls.Certificate
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return none, &Error{"cert", f.Cert, unwrapPath(err)}
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return none, &Error{"key", f.Key, unwrapPath(err)}
	}
	if b, _ := pem.Decode(certPEM); b == nil || b.Type != "CERTIFICATE" {
		return none, &Error{"cert", f.Cert, errors.New("no PEM CERTIFICATE block")}
	}
	if b, _ := pem.Decode(keyPEM); b == nil {
		return none, &Error{"key", f.Key, errors.New("no PEM private key block")}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// Past the PEM checks above, what fails is the key: unparsable, or
		// not the certificate's ("private key does not match public key").
		return none, &Error{"key", f.Key, fmt.Errorf("%v (certificate %s)", err, f.Cert)}
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return none, &Error{"cert", f.Cert, err}
		}
		cert.Leaf = leaf
	}
	switch {
	case now.After(leaf.NotAfter):
		return none, &Error{"cert", f.Cert, fmt.Errorf("certificate %q expired at %s", leaf.Subject, leaf.NotAfter.UTC().Format(time.RFC3339))}
	case now.Before(leaf.NotBefore):
		return none, &Error{"cert", f.Cert, fmt.Errorf("certificate %q is not valid before %s", leaf.Subject, leaf.NotBefore.UTC().Format(time.RFC3339))}
	}
	return cert, nil
}

func loadPool(path, field string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{field, path, unwrapPath(err)}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, &Error{field, path, errors.New("no PEM CERTIFICATE block")}
	}
	return pool, nil
}

// unwrapPath drops the path os.ReadFile puts in its error: Error says it.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Leaf is the certificate clients are shown, or nil if there is none.
func (m *Material) Leaf() *x509.Certificate { return m.cert.Leaf }

// hasCert reports whether m can serve handshakes.
func (m *Material) hasCert() bool { return len(m.cert.Certificate) > 0 }

// ClientAuth reports whether clients must present a certificate.
func (m *Material) ClientAuth() bool { return m.clientCAs != nil }

// Store holds the Material in force; the zero Store holds none (and its
// configs fail every handshake).
type Store struct {
	cur atomic.Pointer[Material]
}

// NewStore is a Store holding m.
func NewStore(m *Material) *Store {
	s := &Store{}
	s.Swap(m)
	return s
}

// Swap puts m in force for the handshakes that start from now on.
func (s *Store) Swap(m *Material) { s.cur.Store(m) }

// Current is the Material in force, or nil.
func (s *Store) Current() *Material { return s.cur.Load() }

var errNone = errors.New("certs: no TLS material loaded")

// ServerConfig is the configuration of a TLS listener offering nextProtos
// by ALPN (none: no ALPN). Each handshake takes the Material in force then:
// its certificate, its client CA (RequireAndVerifyClientCert when set) and
// its minimum version; the cipher suites are Go's defaults. Session tickets
// are encrypted with the returned Config's own keys, kept across reloads.
func (s *Store) ServerConfig(nextProtos ...string) *tls.Config {
	// One Config per Material, not per handshake: every connection keeps
	// its Config, and a Config is about 700 bytes (9,000 idle wss clients
	// held 6 MB of copies).
	var last atomic.Pointer[serverConfig]
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.cur.Load()
			if m == nil || !m.hasCert() {
				return nil, errNone
			}
			if sc := last.Load(); sc != nil && sc.m == m {
				return sc.c, nil
			}
			c := &tls.Config{
				Certificates: []tls.Certificate{m.cert},
				MinVersion:   m.minVersion,
				NextProtos:   nextProtos,
			}
			if m.clientCAs != nil {
				c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, m.clientCAs
			}
			last.Store(&serverConfig{m, c})
			return c, nil
		},
	}
}

// serverConfig is the Config a listener's handshakes get under m.
type serverConfig struct {
	m *Material
	c *tls.Config
}

// ClientConfig is the configuration for dialing an instance at serverName
// (its host as configured: an IP address is verified against the
// certificate's IP SANs): the instance's certificate verified against
// InstanceCA or the system's roots, clb's own certificate presented if the
// instance asks for one, the Material in force now.
func (s *Store) ClientConfig(serverName string, nextProtos ...string) *tls.Config {
	m := s.cur.Load()
	c := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12, NextProtos: nextProtos}
	if m == nil {
		return c
	}
	c.MinVersion, c.RootCAs = m.minVersion, m.instanceRoots
	if m.hasCert() {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &m.cert, nil }
	}
	return c
}

// ParseVersion reads a min_version: "1.2" or "1.3".
func ParseVersion(s string) (uint16, error) {
	switch s {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%q: want \"1.2\" or \"1.3\"", s)
}
