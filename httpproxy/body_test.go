package httpproxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"testing"
)

// TestBodySizes: request and response bodies on either side of the size
// that goes in one write with its head (maxInline), one after another on
// one keep-alive connection, plain and over TLS, each arrive whole and
// framed: the instance gets each request's body, and the client each
// response's, with nothing left over for the next.
func TestBodySizes(t *testing.T) {
	sizes := []int{0, 1, 100, maxInline - 1, maxInline, maxInline + 1, 3 * maxInline, 200_000}
	for _, https := range []bool{false, true} {
		t.Run(fmt.Sprintf("https=%v", https), func(t *testing.T) {
			c := newCluster(t, clusterOptions{n: 1, https: https})
			b := c.backends[c.names[0]]
			b.handle = func(w http.ResponseWriter, r *http.Request) {
				n, _ := strconv.Atoi(r.URL.Query().Get("answer"))
				w.Header().Set("Content-Length", strconv.Itoa(n))
				_, _ = w.Write(pattern(n, 2))
			}
			var conn net.Conn = dialRaw(t, c.server.Addr())
			if https {
				cfg := c.ca.ClientConfig()
				cfg.NextProtos, cfg.ServerName = []string{"http/1.1"}, "127.0.0.1"
				conn = tls.Client(conn, cfg)
			}
			br := bufio.NewReader(conn)
			for i, n := range sizes {
				answer := sizes[len(sizes)-1-i] // big requests get small answers and back
				req := fmt.Appendf(nil, "POST /body?answer=%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", answer, n)
				req = append(req, pattern(n, 1)...)
				if _, err := conn.Write(req); err != nil {
					t.Fatal(err)
				}
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("request %d (%d bytes): %v", i, n, err)
				}
				got, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 || !bytes.Equal(got, pattern(answer, 2)) {
					t.Fatalf("request %d (%d bytes): %d, %d of %d bytes of answer, %v", i, n, res.StatusCode, len(got), answer, err)
				}
			}
			_, bodies := b.requests()
			if len(bodies) != len(sizes) {
				t.Fatalf("the instance got %d requests, want %d", len(bodies), len(sizes))
			}
			for i, n := range sizes {
				if bodies[i] != string(pattern(n, 1)) {
					t.Errorf("request %d: the instance got %d bytes, want the %d sent", i, len(bodies[i]), n)
				}
			}
		})
	}
}

// pattern is n bytes that differ from one seed to another.
func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return b
}
