package httpproxy

import (
	"io"
	"strings"
	"testing"

	"clb/config"
)

// TestFramingRefused sends each ambiguous request as raw bytes, with a
// request pipelined behind it that a lenient parser would take for a second
// one (smuggling). clb must answer 400 (or the status given) and close, and
// nothing may reach an instance.
func TestFramingRefused(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 2, limits: func(l *config.HTTP) {
		l.MaxHeaderBytes, l.MaxHeaders = 2048, 20
	}})
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name, req string
		status    string
	}{
		{"Content-Length and Transfer-Encoding", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"},
		{"Transfer-Encoding then Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", "400"},
		{"last coding not chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", "400"},
		{"two Transfer-Encoding fields, chunked first", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n", "400"},
		{"HTTP/1.0 with Transfer-Encoding", "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"},
		{"Content-Length not a number", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1a\r\n\r\nx", "400"},
		{"Content-Length with a sign", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd", "400"},
		{"Content-Length list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nabcd", "400"},
		{"two Content-Length fields", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", "400"},
		{"white space before a colon", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 4\r\n\r\nabcd", "400"},
		{"line folding", "GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", "400"},
		{"bare CR in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n", "400"},
		{"NUL in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n", "400"},
		{"bare LF ending a line", "GET / HTTP/1.1\nHost: x\r\n\r\n", "400"},
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", "400"},
		{"two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "400"},
		{"chunk without its CRLF", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n", "400"},
		{"HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", "505"},
		{"head too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 3000) + "\r\n\r\n", "431"},
		{"too many fields", "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-N: 1\r\n", 30) + "\r\n", "431"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialRaw(t, c.server.Addr())
			if _, err := io.WriteString(conn, tc.req+smuggled); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(conn) // to EOF: clb must close
			if err != nil {
				t.Fatalf("read: %v (got %q)", err, got)
			}
			if !strings.HasPrefix(string(got), "HTTP/1.1 "+tc.status+" ") {
				t.Fatalf("got %q, want %s", got, tc.status)
			}
			if strings.Count(string(got), "HTTP/1.1 ") != 1 {
				t.Fatalf("more than one response:\n%s", got)
			}
		})
	}
	if n := c.total(); n != 0 {
		for name, b := range c.backends {
			seen, _ := b.requests()
			for _, r := range seen {
				t.Logf("%s got %s %s", name, r.Method, r.URL)
			}
		}
		t.Fatalf("%d requests reached the instances", n)
	}
}
