package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"clb/certs/certstest"
)

// TestCheckTLS: clb check prints the certificate it would serve, and
// refuses a missing or unreadable certificate, a key of another
// certificate and an expired certificate, naming file, line and key.
func TestCheckTLS(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	cert, key := ca.Issue(t, certstest.Leaf{Name: "clb.example"}).Write(t, dir, "clb")
	_, otherKey := ca.Issue(t, certstest.Leaf{Name: "other"}).Write(t, dir, "other")
	oldCert, oldKey := ca.Issue(t, certstest.Leaf{Name: "old", NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}).Write(t, dir, "old")
	file := func(cert, key string) string {
		return writeFile(t, fmt.Sprintf(`listen:
  sip: [udp://127.0.0.1:5060, tls://127.0.0.1:5061]
  https: 127.0.0.1:8443
instances:
  - {name: a, sip: tls://127.0.0.1:5071, http: https://127.0.0.1:8081}
tls:
  cert: %s
  key: %s
`, cert, key))
	}
	path := file(cert, key)
	code, out, errOut := clb(t, "", "check", "-config", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"udp://127.0.0.1:5060, tls://127.0.0.1:5061", "https  127.0.0.1:8443", `tls: certificate "CN=clb.example", expires`, "client certificates not asked for"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	for _, tc := range []struct {
		name      string
		cert, key string
		want      string // the start of stderr's first line, after the path
	}{
		{name: "missing certificate", cert: dir + "/none.pem", key: key, want: ":7: tls.cert: " + dir + "/none.pem: no such file or directory"},
		{name: "key of another certificate", cert: cert, key: otherKey, want: ":8: tls.key: " + otherKey + ": tls: private key does not match public key"},
		{name: "expired", cert: oldCert, key: oldKey, want: ":7: tls.cert: " + oldCert + `: certificate "CN=old" expired at`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := file(tc.cert, tc.key)
			code, out, errOut := clb(t, "", "check", "-config", path)
			if code != 1 || out != "" || !strings.HasPrefix(errOut, path+tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %s%s", code, out, errOut, path, tc.want)
			}
		})
	}
}

// TestRunHTTPSReload: clb run serves HTTP/2 on listen.https; a renewed
// certificate written over the files and reloaded (POST /api/v1/reload,
// then SIGHUP) is shown to new connections while an HTTP/2 connection
// opened before goes on; a reload with an expired certificate is refused
// and the certificate in force stays.
func TestRunHTTPSReload(t *testing.T) {
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("X-Forwarded-Proto"))
	}))
	defer inst.Close()
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	cert, key := ca.Issue(t, certstest.Leaf{Name: "first"}).Write(t, dir, "clb")
	path := writeFile(t, fmt.Sprintf("listen: {https: 127.0.0.1:0, admin: 127.0.0.1:0}\ninstances:\n  - {name: a, http: %s}\ntls: {cert: %s, key: %s}\n", inst.URL, cert, key))
	p := startCLB(t, path)
	httpsAddr, adminAddr := p.started["https"].(string), p.started["admin"].(string)

	client := func() *http.Client {
		tr := &http.Transport{TLSClientConfig: ca.ClientConfig(), Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP2(true)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	get := func(cl *http.Client) string {
		t.Helper()
		res, err := cl.Get("https://" + httpsAddr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.ProtoMajor != 2 || string(body) != "https" {
			t.Fatalf("%s, body %q; want HTTP/2 and X-Forwarded-Proto https", res.Proto, body)
		}
		return res.TLS.PeerCertificates[0].Subject.CommonName
	}
	old := client()
	if got := get(old); got != "first" {
		t.Fatalf("certificate %q", got)
	}

	renewed := ca.Issue(t, certstest.Leaf{Name: "second"})
	certstest.WriteFile(t, key, renewed.KeyPEM)
	certstest.WriteFile(t, cert, renewed.CertPEM)
	if code, body := adminCall(t, adminAddr, "POST", "/api/v1/reload", nil); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if got := get(client()); got != "second" {
		t.Errorf("a new connection after the reload got %q", got)
	}
	if got := get(old); got != "first" {
		t.Errorf("the old connection now shows %q", got)
	}

	expired := ca.Issue(t, certstest.Leaf{Name: "third", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	certstest.WriteFile(t, key, expired.KeyPEM)
	certstest.WriteFile(t, cert, expired.CertPEM)
	p.signal(syscall.SIGHUP)
	if e := p.log("reload refused; the running configuration stays"); !strings.Contains(fmt.Sprint(e["error"]), "expired") {
		t.Errorf("refusal log %v", e)
	}
	if got := get(client()); got != "second" {
		t.Errorf("after a refused reload a new connection got %q", got)
	}
	p.signal(syscall.SIGTERM)
	p.log("clb stopped")
	if err := p.exit(); err != nil {
		t.Fatalf("exit: %v", err)
	}
}
