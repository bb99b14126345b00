package httpproxy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"clb/balancer"
)

// TestCurlHTTP2: curl --http2 (nghttp2) through clb's HTTPS listener speaks
// HTTP/2, gets CLBKEY and CLBROUTE, and with its cookie jar stays on the
// owner of its key. Skipped without curl (CLB_REQUIRE_CURL=1 fails
// instead).
func TestCurlHTTP2(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CLB_REQUIRE_CURL") != "" {
			t.Fatal("curl not found")
		}
		t.Skip("curl not found")
	}
	c := newCluster(t, clusterOptions{n: 3, https: true})
	dir := t.TempDir()
	ca := c.ca.WriteCA(t, dir, "ca")
	jar := filepath.Join(dir, "jar")
	run := func(path string) (proto, servedBy string) {
		t.Helper()
		out, err := exec.Command(curl, "--silent", "--show-error", "--http2", "--cacert", ca, "--max-time", "10",
			"--cookie", jar, "--cookie-jar", jar, "--dump-header", "-", "--output", os.DevNull, c.url+path).Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "HTTP/") {
				proto, _, _ = strings.Cut(line, " ")
			}
			if v, ok := strings.CutPrefix(strings.ToLower(line), "x-served-by: "); ok {
				servedBy = v
			}
		}
		return proto, servedBy
	}
	proto, first := run("/one")
	if proto != "HTTP/2" || first == "" {
		t.Fatalf("curl got %q from %q, want HTTP/2", proto, first)
	}
	jarText, _ := os.ReadFile(jar)
	var key string
	for _, line := range strings.Split(string(jarText), "\n") {
		if f := strings.Split(line, "\t"); len(f) == 7 && f[5] == keyCookie {
			key = f[6]
		}
	}
	if owner := c.bal.Table().RouteFor(balancer.HTTP, key, "", time.Now()).Owner.Name; key == "" || owner != first {
		t.Fatalf("CLBKEY %q in curl's jar, served by %s, owner %s", key, first, owner)
	}
	for _, path := range []string{"/two", "/three"} {
		if proto, by := run(path); proto != "HTTP/2" || by != first {
			t.Errorf("%s: %s from %s, the session is on %s", path, proto, by, first)
		}
	}
	c.expectRouted(c.lastRequest(first), first, key, first)
}
