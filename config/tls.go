package config

import (
	"errors"
	"time"

	"clb/certs"
)

// TLS is the TLS material of clb's tls:// SIP listeners and of
// listen.https (SPEC section 6a), and the trust clb puts in instances it
// dials over tls:// or https://. The files are read at start and again on
// every reload (SIGHUP, POST /api/v1/reload): a renewed certificate is
// picked up by new connections while established ones go on.
type TLS struct {
	// Cert is the PEM certificate chain, leaf first. Required with a tls://
	// listener or listen.https. Default none.
	Cert string `yaml:"cert"`
	// Key is the PEM private key of the leaf. Required with Cert. Default
	// none.
	Key string `yaml:"key"`
	// MinVersion is the lowest TLS version: "1.2" or "1.3". Default "1.2".
	MinVersion string `yaml:"min_version"`
	// ClientCA, if set, is a PEM bundle: every TLS client must present a
	// certificate signed by one of its CAs. Default "" (none asked for).
	ClientCA string `yaml:"client_ca"`
	// InstanceCA, if set, is the PEM bundle that instances' certificates
	// are verified against when clb dials tls:// and https:// instances,
	// their configured host (an IP address) as the name to verify. Default
	// "": the system's roots.
	InstanceCA string `yaml:"instance_ca"`
	// FlowKey is the secret of the flow tokens clb puts in its Record-Route
	// towards WebSocket clients (SPEC section 6a): an HMAC of it names the
	// client's connection, so that no client can forge another's. At least
	// 32 characters; give every clb node the same. Default "": a random key
	// made at start (tokens then die with the process, as its connections
	// do).
	FlowKey string `yaml:"flow_key"`
}

// Files are the section as package certs takes it; the version must have
// validated.
func (t TLS) Files() certs.Files {
	v, _ := certs.ParseVersion(t.MinVersion)
	return certs.Files{Cert: t.Cert, Key: t.Key, MinVersion: v, ClientCA: t.ClientCA, InstanceCA: t.InstanceCA}
}

// Set reports whether the section names any material.
func (t TLS) Set() bool { return t.Cert != "" || t.Key != "" }

// ServesTLS reports whether clb has a TLS listener: a tls:// or wss://
// one in listen.sip, or listen.https. (Dialing https:// instances needs no
// certificate of clb's: instance_ca alone, or the system's roots.)
func (c *Config) ServesTLS() bool {
	for _, a := range c.Listen.SIP {
		if a.Transport == "tls" || a.Transport == "wss" {
			return true
		}
	}
	return !c.Listen.HTTPS.IsZero()
}

// validateTLS checks the tls section: the material is required by a TLS
// listener or a TLS instance, and must load (certs.Load: readable, key
// matching, certificate valid now).
func (d *decoder) validateTLS(c *Config) {
	t := &c.TLS
	if _, err := certs.ParseVersion(t.MinVersion); err != nil {
		d.errorf(d.line("tls.min_version"), "tls.min_version", "%v", err)
		return
	}
	if !t.Set() && c.ServesTLS() {
		d.errorf(d.line("tls"), "tls.cert", "required: a tls:// or wss:// listener or listen.https needs tls.cert and tls.key")
		return
	}
	if !t.Set() && t.ClientCA != "" {
		d.errorf(d.line("tls.client_ca"), "tls.client_ca", "asks clients for certificates, but clb has no TLS listener or no tls.cert")
		return
	}
	if _, err := certs.Load(t.Files(), time.Now()); err != nil {
		var e *certs.Error
		key := "tls"
		if errors.As(err, &e) {
			key = "tls." + e.Field
		}
		d.errorf(d.line(key), key, "%v", err)
	}
}
