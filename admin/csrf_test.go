package admin

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"clb/balancer"
	"clb/browsertest"
)

// stateOf is b's state in the balancer now.
func (f *fixture) stateOf(name string) balancer.State {
	for _, st := range f.bal.Table().Status(time.Now()) {
		if st.Instance.Name == name {
			return st.State
		}
	}
	f.t.Fatalf("no instance %s", name)
	return 0
}

// raw makes a request with exactly the fields given (Host among them).
func (f *fixture) raw(method, path string, fields ...string) (int, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.base+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == "Host" {
			req.Host = fields[i+1]
			continue
		}
		req.Header.Set(fields[i], fields[i+1])
	}
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, res.Body)
	return res.StatusCode, b.String()
}

// TestStateChangeNeedsAProgram: a state-changing call without the admin
// header or a JSON body (what a plain HTML form sends), or with another
// site's Origin, is refused and changes nothing; with either it is obeyed.
func TestStateChangeNeedsAProgram(t *testing.T) {
	f := start(t, Options{})
	for _, tc := range []struct {
		name   string
		fields []string
	}{
		{"bare POST", nil},
		{"form POST", []string{"Content-Type", "application/x-www-form-urlencoded"}},
		{"text POST", []string{"Content-Type", "text/plain"}},
		{"multipart POST", []string{"Content-Type", "multipart/form-data; boundary=x"}},
		{"another site's Origin", []string{AdminHeader, "1", "Origin", "http://evil.example"}},
		{"another port's Origin", []string{"Content-Type", "application/json", "Origin", "http://127.0.0.1:1"}},
		{"an opaque Origin", []string{AdminHeader, "1", "Origin", "null"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/api/v1/instances/b/drain", "/api/v1/instances/b/disable"} {
				if code, body := f.raw("POST", path, tc.fields...); code != http.StatusForbidden {
					t.Errorf("%s: %d %s, want 403", path, code, body)
				}
			}
			if st := f.stateOf("b"); st != balancer.Up {
				t.Fatalf("b is %s after refused calls, want up", st)
			}
		})
	}
	host := strings.TrimPrefix(f.base, "http://")
	for _, fields := range [][]string{
		{AdminHeader, "1"},
		{"Content-Type", "application/json; charset=utf-8", "Origin", "http://" + host},
	} {
		if code, body := f.raw("POST", "/api/v1/instances/b/disable", fields...); code != 200 {
			t.Fatalf("%v: %d %s, want 200", fields, code, body)
		}
		if st := f.stateOf("b"); st != balancer.Disabled {
			t.Fatalf("b is %s, want disabled", st)
		}
		if code, body := f.raw("POST", "/api/v1/instances/b/enable", fields...); code != 200 {
			t.Fatalf("enable: %d %s", code, body)
		}
	}
}

// TestHostMustBeLocal: without a token, the API answers only to a Host
// that is an IP address or localhost, so that a DNS rebinding page (its own
// name pointed at 127.0.0.1) reads and changes nothing; with a token any
// Host goes, the token being what guards it.
func TestHostMustBeLocal(t *testing.T) {
	f := start(t, Options{})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(f.base, "http://"))
	for _, host := range []string{"rebind.example:" + port, "rebind.example", "127.0.0.1.nip.io:" + port, "localhost.example:" + port} {
		for _, call := range [][2]string{{"GET", "/api/v1/status"}, {"GET", "/metrics"}, {"POST", "/api/v1/instances/b/drain"}} {
			if code, _ := f.raw(call[0], call[1], "Host", host, AdminHeader, "1"); code != http.StatusForbidden {
				t.Errorf("%s %s with Host %s: %d, want 403", call[0], call[1], host, code)
			}
		}
	}
	if st := f.stateOf("b"); st != balancer.Up {
		t.Fatalf("b is %s, want up", st)
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST", "[::1]:" + port, "127.0.0.1"} {
		if code, body := f.raw("GET", "/api/v1/status", "Host", host); code != 200 {
			t.Errorf("Host %s: %d %s, want 200", host, code, body)
		}
	}
	tf := start(t, Options{Token: "s3cret"})
	if code, body := tf.raw("GET", "/api/v1/status", "Host", "clb-admin.example:9090", "Authorization", "Bearer s3cret"); code != 200 {
		t.Errorf("with the token, Host clb-admin.example: %d %s, want 200", code, body)
	}
	if code, _ := tf.raw("GET", "/api/v1/status", "Host", "clb-admin.example:9090", "Authorization", "Bearer s3cre"); code != 401 {
		t.Errorf("a wrong token: %d, want 401", code)
	}
}

// attack is a page of another site that tries to drain b through the admin
// API at ADMIN: a form POST (a simple request, which needs no preflight),
// a no-cors fetch, and a fetch with the admin header (which needs a
// preflight clb never grants). It reports when all three are over.
const attack = `<!doctype html><html><body>
<iframe name="sink" id="sink"></iframe>
<form id="f" method="POST" action="ADMIN/api/v1/instances/b/drain" target="sink"><input name="x" value="1"></form>
<script>
window.attacked = (async () => {
  const out = [];
  await new Promise(res => { document.getElementById("sink").onload = res; document.getElementById("f").submit(); });
  out.push("form sent");
  try { await fetch("ADMIN/api/v1/instances/b/disable", {method: "POST", mode: "no-cors", body: "x"}); out.push("no-cors sent"); }
  catch (e) { out.push("no-cors failed: " + e); }
  try { const r = await fetch("ADMIN/api/v1/instances/b/disable", {method: "POST", headers: {"X-CLB-Admin": "1"}}); out.push("cors " + r.status); }
  catch (e) { out.push("cors refused"); }
  return out.join("; ");
})();
</script></body></html>`

// TestBrowserCannotDriveTheAPI: in a real headless Chromium, a page of
// another origin tries a cross-site form POST and two fetches against the
// loopback admin API, and a DNS rebinding page (a name the browser resolves
// to 127.0.0.1, on the admin port: same origin) fetches with the admin
// header. Nothing changes.
func TestBrowserCannotDriveTheAPI(t *testing.T) {
	f := start(t, Options{})
	w := browsertest.Start(t, "--host-resolver-rules=MAP rebind.test 127.0.0.1")
	site := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html")
		fmt.Fprint(rw, strings.ReplaceAll(attack, "ADMIN", f.base))
	}))
	t.Cleanup(site.Close)

	w.Do("POST", "/url", map[string]string{"url": site.URL + "/"}, nil)
	var report string
	w.Do("POST", "/execute/async", map[string]any{"script": "window.attacked.then(arguments[0])", "args": []any{}}, &report)
	t.Logf("cross-site page: %s", report)
	if !strings.Contains(report, "form sent") || !strings.Contains(report, "cors refused") {
		t.Errorf("the page's attempts did not all run: %s", report)
	}
	if st := f.stateOf("b"); st != balancer.Up {
		t.Fatalf("b is %s after the cross-site page, want up", st)
	}

	// DNS rebinding: the page's own origin is rebind.test:PORT, which
	// resolves to the admin listener, so the browser lets it send anything.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(f.base, "http://"))
	rebound := "http://rebind.test:" + port
	w.Do("POST", "/url", map[string]string{"url": rebound + "/"}, nil) // the status page, served to anyone
	const rebind = `const done = arguments[0];
(async () => {
  const out = [];
  for (const [m, p] of [["GET", "/api/v1/status"], ["POST", "/api/v1/instances/b/drain"]]) {
    const r = await fetch(p, {method: m, headers: {"X-CLB-Admin": "1"}});
    out.push(m + " " + r.status);
  }
  return out.join("; ");
})().then(done, e => done("error " + e));`
	w.Do("POST", "/execute/async", map[string]any{"script": rebind, "args": []any{}}, &report)
	t.Logf("rebinding page: %s", report)
	if report != "GET 403; POST 403" {
		t.Errorf("rebinding page got %q, want GET 403; POST 403", report)
	}
	if st := f.stateOf("b"); st != balancer.Up {
		t.Fatalf("b is %s after the rebinding page, want up", st)
	}
}
