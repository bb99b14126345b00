package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"clb/certs/certstest"
)

// tlsFiles are a test CA's certificate, a good pair, a key of another
// certificate, an expired pair and an unreadable certificate.
type tlsFiles struct {
	ca, cert, key, otherKey, oldCert, oldKey, unreadable, missing string
}

func newTLSFiles(t *testing.T) tlsFiles {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	var f tlsFiles
	f.ca = ca.WriteCA(t, dir, "ca")
	f.cert, f.key = ca.Issue(t, certstest.Leaf{Name: "clb"}).Write(t, dir, "clb")
	_, f.otherKey = ca.Issue(t, certstest.Leaf{Name: "other"}).Write(t, dir, "other")
	f.oldCert, f.oldKey = ca.Issue(t, certstest.Leaf{Name: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}).Write(t, dir, "old")
	f.unreadable = filepath.Join(dir, "unreadable.pem")
	certstest.WriteFile(t, f.unreadable, []byte("secret"))
	if err := os.Chmod(f.unreadable, 0); err != nil {
		t.Fatal(err)
	}
	f.missing = filepath.Join(dir, "missing.pem")
	return f
}

func TestTLSSection(t *testing.T) {
	f := newTLSFiles(t)
	c, err := Parse("tls.yaml", fmt.Appendf(nil, `listen:
  sip: [udp://127.0.0.1:5060, tls://127.0.0.1]
  https: 127.0.0.1:8443
tls:
  cert: %s
  key: %s
  client_ca: %s
  instance_ca: %s
instances:
  - {name: a, sip: tls://127.0.0.1, http: https://127.0.0.1}
  - {name: b, sip: udp://127.0.0.1:5071, http: http://127.0.0.1:8081}
`, f.cert, f.key, f.ca, f.ca))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Listen.SIP[1].String(); got != "tls://127.0.0.1:5061" {
		t.Errorf("listen.sip[1] %s, want port 5061 by default", got)
	}
	if c.Listen.HTTPS.Addr() != "127.0.0.1:8443" {
		t.Errorf("listen.https %s", c.Listen.HTTPS.Addr())
	}
	if a := c.Instances[0]; a.SIP.String() != "tls://127.0.0.1:5061" || a.HTTP.String() != "https://127.0.0.1:443" {
		t.Errorf("instance a: sip %s http %s", a.SIP, a.HTTP)
	}
	if c.TLS.MinVersion != "1.2" || !c.ServesTLS() || c.TLS.Files().Cert != f.cert {
		t.Errorf("tls %+v", c.TLS)
	}
	// https:// instances alone need no certificate of clb's.
	if _, err := Parse("https-instances.yaml", []byte("listen: {http: 127.0.0.1:8080}\ninstances: [{name: a, http: https://127.0.0.1:8443}]\n")); err != nil {
		t.Errorf("https instance behind plain HTTP: %v", err)
	}
}

// TestTLSErrors: clb check and a reload refuse TLS material that is
// missing, unreadable, mismatched or expired, naming the file, the line and
// the key at fault.
func TestTLSErrors(t *testing.T) {
	f := newTLSFiles(t)
	section := func(cert, key string) string {
		return fmt.Sprintf("listen:\n  sip: tls://127.0.0.1:5061\ninstances: [{name: a, sip: tls://127.0.0.1:5071}]\ntls:\n  cert: %s\n  key: %s\n", cert, key)
	}
	for _, tc := range []struct {
		name string
		yaml string
		line int
		key  string
		msg  string
		skip bool
	}{
		{
			name: "tls listener without tls section",
			yaml: "listen:\n  sip: tls://127.0.0.1:5061\ninstances: [{name: a, sip: tls://127.0.0.1:5071}]\n",
			line: 1, key: "tls.cert", msg: "needs tls.cert and tls.key",
		},
		{
			name: "https listener without tls section",
			yaml: "listen:\n  https: 127.0.0.1:8443\ninstances: [{name: a, http: http://127.0.0.1:8081}]\n",
			line: 1, key: "tls.cert", msg: "needs tls.cert and tls.key",
		},
		{name: "missing certificate", yaml: section(f.missing, f.key), line: 5, key: "tls.cert", msg: f.missing + ": no such file"},
		{name: "missing key", yaml: section(f.cert, f.missing), line: 6, key: "tls.key", msg: f.missing + ": no such file"},
		{name: "unreadable certificate", yaml: section(f.unreadable, f.key), line: 5, key: "tls.cert", msg: "permission denied", skip: os.Geteuid() == 0},
		{name: "key of another certificate", yaml: section(f.cert, f.otherKey), line: 6, key: "tls.key", msg: "does not match"},
		{name: "expired certificate", yaml: section(f.oldCert, f.oldKey), line: 5, key: "tls.cert", msg: "expired at"},
		{name: "key without certificate", yaml: section(`""`, f.key), line: 5, key: "tls.cert", msg: "no certificate file"},
		{name: "min_version 1.1", yaml: section(f.cert, f.key) + "  min_version: \"1.1\"\n", line: 7, key: "tls.min_version", msg: `want "1.2" or "1.3"`},
		{name: "missing client CA", yaml: section(f.cert, f.key) + "  client_ca: " + f.missing + "\n", line: 7, key: "tls.client_ca", msg: "no such file"},
		{name: "client CA without certificate", yaml: "listen: {http: 127.0.0.1:8080}\ninstances: [{name: a, http: http://127.0.0.1:1}]\ntls:\n  client_ca: " + f.ca + "\n", line: 4, key: "tls.client_ca", msg: "no TLS listener"},
		{name: "tls scheme for http", yaml: "listen: {http: 127.0.0.1:8080}\ninstances:\n  - {name: a, http: tls://127.0.0.1:1}\n", line: 3, key: "instances[0].http", msg: "not supported"},
		{name: "wss without tls", yaml: "listen:\n  sip: [udp://127.0.0.1:5060, wss://127.0.0.1:7443/sip]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n",
			line: 1, key: "tls.cert", msg: "wss:// listener"},
		{name: "short flow key", yaml: fmt.Sprintf("%stls: {cert: %s, key: %s, flow_key: short}\n", wsBase, f.cert, f.key), line: 4, key: "tls.flow_key", msg: "at least 32"},
		{
			name: "https clashes with http",
			yaml: fmt.Sprintf("listen:\n  http: 127.0.0.1:8080\n  https: 127.0.0.1:8080\ntls: {cert: %s, key: %s}\ninstances: [{name: a, http: http://127.0.0.1:1}]\n", f.cert, f.key),
			line: 3, key: "listen.https", msg: "also listen.http",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip {
				t.Skip("root reads every file")
			}
			_, err := Parse("clb.yaml", []byte(tc.yaml))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse: %v, want an *Error", err)
			}
			found := false
			for _, x := range err.(interface{ Unwrap() []error }).Unwrap() {
				e := x.(*Error)
				found = found || e.Line == tc.line && e.Key == tc.key && strings.Contains(e.Msg, tc.msg)
			}
			if !found {
				t.Errorf("got %v; want clb.yaml:%d: %s: …%s…", err, tc.line, tc.key, tc.msg)
			}
		})
	}
}
