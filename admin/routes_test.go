package admin

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// postRoutes posts body to POST /api/v1/route (with query q) and returns
// the answer.
func (f *fixture) postRoutes(q, body string) (*http.Response, string) {
	f.t.Helper()
	res, err := http.Post(f.base+"/api/v1/route"+q, "text/plain", strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return res, string(out)
}

// TestRouteBatch: POST /api/v1/route answers each key of its body as clb
// route prints it, from the table GET /api/v1/route uses, with that table's
// fingerprint; blank lines and CRLF are skipped; the SIP-only instance is
// left out with protocol=http; bad input gets 400 or 413.
func TestRouteBatch(t *testing.T) {
	f := start(t, Options{})
	var keys []string
	var want strings.Builder
	now := time.Now()
	for i := range 2000 {
		k := fmt.Sprintf("key-%d", i)
		keys = append(keys, k)
		d := f.bal.Route(k, "", now)
		fmt.Fprintf(&want, "%s %s %s\n", k, d.Owner.Name, d.Replica.Name)
	}
	res, body := f.postRoutes("", strings.Join(keys, "\r\n")+"\n\n")
	if res.StatusCode != 200 || body != want.String() {
		t.Errorf("batch: %d, %d bytes, want %d:\n%.300s", res.StatusCode, len(body), want.Len(), body)
	}
	if fp, want := res.Header.Get("X-CLB-Fingerprint"), fmt.Sprintf("%016x", f.bal.Table().Fingerprint(now)); fp != want {
		t.Errorf("X-CLB-Fingerprint %q, want %q", fp, want)
	}
	if n := res.Header.Get("X-CLB-Keys"); n != "2000" {
		t.Errorf("X-CLB-Keys %q", n)
	}
	_, body = f.postRoutes("?protocol=http", strings.Join(keys, "\n"))
	if strings.Contains(body, " b ") || strings.Contains(body, " b\n") || strings.Count(body, "\n") != 2000 {
		t.Errorf("protocol=http names b, which speaks no HTTP:\n%.300s", body)
	}
	for _, bad := range []struct {
		name, q, body string
		code          int
	}{
		{name: "protocol", q: "?protocol=smtp", body: "k\n", code: 400},
		{name: "long key", body: "k\n" + strings.Repeat("x", maxRouteKey+1) + "\n", code: 400},
		{name: "big body", body: strings.Repeat("k\n", maxRouteBody/2+1), code: 413},
	} {
		if res, body := f.postRoutes(bad.q, bad.body); res.StatusCode != bad.code || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %.200s, want %d", bad.name, res.StatusCode, body, bad.code)
		}
	}
	// No live instance: "-" for owner and replica.
	for _, n := range []string{"a", "b", "c"} {
		f.call("POST", "/api/v1/instances/"+n+"/disable", nil)
	}
	if _, body := f.postRoutes("", "k1\n"); body != "k1 - -\n" {
		t.Errorf("all out: %q", body)
	}
}
