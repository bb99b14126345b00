package httpproxy

import (
	"io"
	"strings"
	"testing"
)

// TestTargetAndHostRefused: a Host that is not one uri-host with an optional
// port, or a request target that is not origin-, asterisk- (OPTIONS) or
// absolute-form agreeing with Host, or has a byte RFC 3986 does not allow,
// gets 400 and a closed connection, and nothing reaches an instance.
func TestTargetAndHostRefused(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 2})
	for _, tc := range []struct{ name, req string }{
		{"Host with userinfo", "GET / HTTP/1.1\r\nHost: evil@app.example.com\r\n\r\n"},
		{"Host with a path", "GET / HTTP/1.1\r\nHost: app.example.com/admin\r\n\r\n"},
		{"Host list", "GET / HTTP/1.1\r\nHost: a.example.com, b.example.com\r\n\r\n"},
		{"Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"},
		{"Host with a bad port", "GET / HTTP/1.1\r\nHost: a.example.com:80x\r\n\r\n"},
		{"Host with a long port", "GET / HTTP/1.1\r\nHost: a.example.com:123456\r\n\r\n"},
		{"Host with non-ASCII", "GET / HTTP/1.1\r\nHost: b\xc3\xbccher.example\r\n\r\n"},
		{"Host with a bad IP literal", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"},
		{"Host with a bad percent", "GET / HTTP/1.1\r\nHost: a%zz.example\r\n\r\n"},
		{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n"},
		{"Host with a query", "GET / HTTP/1.1\r\nHost: a.example?x\r\n\r\n"},
		{"target with non-ASCII", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"target with overlong UTF-8", "GET /\xc0\xaf HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"target with a control byte", "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"target with DEL", "GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"target with a fragment", "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"target with a quote", "GET /a\"b HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"target with a backslash", "GET /a\\..\\b HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"target with braces", "GET /a{b} HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"target with a bad percent", "GET /a%zzb HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"target with a cut percent", "GET /a% HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"target with brackets in the path", "GET /a[0] HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"authority-form", "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n"},
		{"asterisk-form but for OPTIONS", "GET * HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"absolute-form of another scheme", "GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"absolute-form against Host", "GET http://other.example/ HTTP/1.1\r\nHost: app.example\r\n\r\n"},
		{"absolute-form with userinfo", "GET http://u@app.example/ HTTP/1.1\r\nHost: u@app.example\r\n\r\n"},
		{"absolute-form without authority", "GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"absolute-form with non-ASCII path", "GET http://x/\xff HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exchangeRaw(t, c, tc.req); !strings.HasPrefix(got, "HTTP/1.1 400 ") || strings.Count(got, "HTTP/1.1 ") != 1 {
				t.Fatalf("got %q, want one 400", got)
			}
		})
	}
	if n := c.total(); n != 0 {
		t.Fatalf("%d requests reached the instances", n)
	}
}

// TestTargetAndHostAccepted: what RFC 9112 and RFC 3986 allow goes on,
// unchanged.
func TestTargetAndHostAccepted(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1})
	for _, tc := range []struct{ name, req, path string }{
		{"origin-form with a query", "GET /a/b;p=1?q=%20x&y=:@/?!$'()*+,; HTTP/1.1\r\nHost: app.example.com:8080\r\n", "/a/b;p=1"},
		{"percent-encoded UTF-8", "GET /caf%C3%A9 HTTP/1.1\r\nHost: app.example.com\r\n", "/café"},
		{"IPv6 Host", "GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\n", "/v6"},
		{"IPv4 Host", "GET /v4 HTTP/1.1\r\nHost: 127.0.0.1\r\n", "/v4"},
		{"absolute-form agreeing with Host", "GET http://App.Example/abs?x=1 HTTP/1.1\r\nHost: app.example\r\n", "/abs"},
		{"asterisk-form OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: app.example\r\n", "*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.total()
			got := exchangeRaw(t, c, tc.req+"Connection: close\r\n\r\n")
			if !strings.HasPrefix(got, "HTTP/1.1 200 ") {
				t.Fatalf("got %q, want 200", got)
			}
			// Go's server answers OPTIONS * itself: its 200 is the
			// instance's, but no handler sees it.
			if tc.path == "*" {
				return
			}
			if c.total() != before+1 {
				t.Fatalf("the instance got %d requests, want 1", c.total()-before)
			}
			if r := c.lastRequest("app1"); r.URL.Path != tc.path {
				t.Errorf("instance saw path %q, want %q", r.URL.Path, tc.path)
			}
		})
	}
}

// exchangeRaw writes req on a new connection and reads to EOF: what clb
// answered before it closed.
func exchangeRaw(t *testing.T, c *cluster, req string) string {
	t.Helper()
	conn := dialRaw(t, c.server.Addr())
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, got)
	}
	return string(got)
}
