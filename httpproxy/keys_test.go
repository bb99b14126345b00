package httpproxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"clb/balancer"
	"clb/config"
	"clb/policy"
)

// TestKeyInHead: requests pipelined on one keep-alive connection, whose
// keys (a rule's header, a CLBKEY cookie, an escaped one) and CLBROUTE
// cookies differ in length and place, each carry their own key to the
// instance, in the access log line and in the cookies set, and go to its
// owner, on the event loop and on a goroutine per connection: the session's
// strings point into the request's head, which the next request overwrites.
func TestKeyInHead(t *testing.T) {
	for _, noLoop := range []bool{false, true} {
		t.Run(fmt.Sprintf("noLoop=%v", noLoop), func(t *testing.T) { keyInHead(t, noLoop) })
	}
}

func keyInHead(t *testing.T, noLoop bool) {
	access, lines := accessLines(t)
	c := newCluster(t, clusterOptions{n: 3, access: access, noLoop: noLoop, rules: []config.Rule{{Header: "x-user"}}})
	for _, b := range c.backends {
		b.mu.Lock()
		b.handle = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Seen-Key", r.Header.Get("X-CLB-Key"))
			fmt.Fprint(w, "ok")
		}
		b.mu.Unlock()
	}
	long := strings.Repeat("L", 300)
	owner := func(key string) string { return c.bal.Table().RouteFor(balancer.HTTP, key, "", time.Now()).Owner.Name }
	cases := []struct {
		fields string // the request's fields after Host
		key    string
		ruled  bool   // the key is the rule's (x-user)
		last   string // the CLBROUTE sent
	}{
		{fields: "Cookie: CLBKEY=" + long + "\r\n", key: long},
		{fields: "Cookie: a=1; CLBKEY=k\r\n", key: "k"},
		{fields: "X-User: bob\r\nCookie: CLBKEY=" + long + "\r\n", key: "bob", ruled: true},
		{fields: "Cookie: CLBROUTE=" + owner("mid") + "; CLBKEY=mid\r\n", key: "mid", last: owner("mid")},
		{fields: "Cookie: CLBKEY=%41lice%20x; CLBROUTE=nowhere\r\n", key: "Alice x", last: "nowhere"},
		{fields: "Cookie: pad=" + long + "\r\nX-User: " + long + "-user\r\n", key: long + "-user", ruled: true},
		{fields: "Cookie: CLBKEY=s\r\n", key: "s"},
	}
	var all strings.Builder
	for i, tc := range cases {
		fmt.Fprintf(&all, "GET /r%d HTTP/1.1\r\nHost: x\r\n%s\r\n", i, tc.fields)
	}
	conn := dialRaw(t, c.server.Addr())
	if _, err := io.WriteString(conn, all.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for i, tc := range cases {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		d := c.bal.Table().RouteFor(balancer.HTTP, tc.key, tc.last, time.Now())
		want := d.Owner.Name
		if res.StatusCode != 200 || servedBy(res) != want {
			t.Fatalf("request %d (key %.20q): %d from %q, want 200 from %s", i, tc.key, res.StatusCode, servedBy(res), want)
		}
		if got := res.Header.Get("X-Seen-Key"); got != policy.EscapeKey(tc.key) {
			t.Errorf("request %d: the instance saw X-CLB-Key %.40q, want %.40q", i, got, policy.EscapeKey(tc.key))
		}
		route, set := setCookie(res, routeCookie)
		if wantSet := tc.last != want; set != wantSet || set && route != want {
			t.Errorf("request %d (CLBROUTE %q): Set-Cookie CLBROUTE %q (%v), want %q (%v)", i, tc.last, route, set, want, wantSet)
		}
		if k, set := setCookie(res, keyCookie); set != tc.ruled || set && k != policy.EscapeKey(tc.key) {
			t.Errorf("request %d: Set-Cookie CLBKEY %.40q (%v), want %.40q (%v)", i, k, set, policy.EscapeKey(tc.key), tc.ruled)
		}
		previous := ""
		if d.Previous != nil {
			previous = d.Previous.Name
		}
		expectLine(t, nextLine(t, lines), map[string]any{"path": fmt.Sprintf("/r%d", i), "key": tc.key,
			"instance": want, "previous": previous, "status": 200.0, "outcome": "relayed"})
	}
}
