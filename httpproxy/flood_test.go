package httpproxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"clb/config"
)

// clientFrom is an HTTP client whose connections come from ip (any
// 127.0.0.0/8 address is local), so that clb sees another source.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// dialFrom is a TCP connection from ip to addr, closed when the test ends,
// with a deadline so that a test cannot hang on it.
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

func status(t *testing.T, cl *http.Client, url string) (int, string) {
	t.Helper()
	res, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, res.Header.Get("Retry-After")
}

// TestRequestRate: a source over its HTTP rate gets 429 with Retry-After and
// reaches no instance; another source goes on; an exempt one is never
// limited; the rate refills with time (the test's clock).
func TestRequestRate(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	c := newCluster(t, clusterOptions{n: 2,
		now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		flood: config.Limits{HTTP: config.HTTPLimits{Rate: 2, Burst: 4},
			Exempt: []config.Prefix{{Prefix: netip.MustParsePrefix("127.0.0.9/32")}}},
	})
	flooder, other, trunk := clientFrom("127.0.0.1"), clientFrom("127.0.0.2"), clientFrom("127.0.0.9")
	count := func(cl *http.Client, n int) (ok, limited int) {
		for range n {
			switch st, ra := status(t, cl, c.url+"/"); st {
			case 200:
				ok++
			case 429:
				limited++
				if s, err := strconv.Atoi(ra); err != nil || s < 1 {
					t.Errorf("429 with Retry-After %q", ra)
				}
			default:
				t.Errorf("status %d", st)
			}
		}
		return ok, limited
	}
	before := c.total()
	if ok, limited := count(flooder, 10); ok != 4 || limited != 6 {
		t.Errorf("flooder: %d ok, %d limited; want its burst of 4, then 429s", ok, limited)
	}
	if c.total()-before != 4 {
		t.Errorf("the instances got %d of the flooder's requests, want 4", c.total()-before)
	}
	if ok, _ := count(other, 3); ok != 3 {
		t.Errorf("another source: %d of 3 ok", ok)
	}
	if ok, _ := count(trunk, 10); ok != 10 {
		t.Errorf("exempt source: %d of 10 ok", ok)
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if ok, limited := count(flooder, 4); ok != 2 || limited != 2 {
		t.Errorf("a second later: %d ok, %d limited; want 2 and 2", ok, limited)
	}
}

// TestConnectionsPerSource: past its cap a source's new connections are
// closed at once, without an answer, while another source connects; a
// closed connection frees its place.
func TestConnectionsPerSource(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, flood: config.Limits{HTTP: config.HTTPLimits{Connections: 2}}})
	dial := func(ip string) net.Conn { return dialFrom(t, ip, c.server.Addr()) }
	// served says whether a request on conn is answered.
	served := func(conn net.Conn) bool {
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return false
		}
		buf := make([]byte, 12)
		n, _ := io.ReadFull(conn, buf)
		return n == 12 && string(buf) == "HTTP/1.1 200"
	}
	a1, a2 := dial("127.0.0.1"), dial("127.0.0.1")
	if !served(a1) || !served(a2) {
		t.Fatal("the first two connections of a source were not served")
	}
	a3 := dial("127.0.0.1") // accepted by the kernel, closed by clb
	if served(a3) {
		t.Error("a third connection of the source was served")
	}
	if b := dial("127.0.0.2"); !served(b) {
		t.Error("another source's connection was not served")
	}
	// a1 asks clb to close: clb uncounts it before it closes, so once a1
	// reads the end of the stream its place is free.
	if _, err := io.WriteString(a1, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(a1); err != nil {
		t.Fatal(err)
	}
	if !served(dial("127.0.0.1")) {
		t.Error("after a connection closed, the source still could not connect")
	}
}

// TestRateLimitedKeepAlive: a 429 to a request without a body leaves the
// connection open (no Connection: close), and the next request on it is
// served once the source has tokens again; a 429 to a request with a body
// (not read) or one that asked to close ends the connection.
func TestRateLimitedKeepAlive(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	c := newCluster(t, clusterOptions{n: 1,
		now:   func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		flood: config.Limits{HTTP: config.HTTPLimits{Rate: 1, Burst: 1}},
	})
	dial := func(ip string) (net.Conn, *bufio.Reader) {
		conn := dialFrom(t, ip, c.server.Addr())
		return conn, bufio.NewReader(conn)
	}
	do := func(conn net.Conn, br *bufio.Reader, req string) *http.Response {
		t.Helper()
		res, _ := sendRecv(t, conn, br, req)
		return res
	}
	advance := func() { mu.Lock(); now = now.Add(time.Second); mu.Unlock() }
	const get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"

	conn, br := dial("127.0.0.1")
	if res := do(conn, br, get); res.StatusCode != 200 {
		t.Fatalf("first request: %d", res.StatusCode)
	}
	before := c.total()
	res := do(conn, br, get)
	if res.StatusCode != 429 || res.Header.Get("Retry-After") == "" || res.Close {
		t.Fatalf("over the rate: %d, Retry-After %q, close %v; want 429 with Retry-After, kept open",
			res.StatusCode, res.Header.Get("Retry-After"), res.Close)
	}
	advance()
	if res := do(conn, br, get); res.StatusCode != 200 {
		t.Errorf("on the same connection a second later: %d, want 200", res.StatusCode)
	}
	if got := c.total() - before; got != 1 {
		t.Errorf("the instance got %d requests after the first, want 1 (the 429's did not reach it)", got)
	}

	// Over the rate again, with a body clb did not read: closed after the 429.
	res = do(conn, br, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if res.StatusCode != 429 || !res.Close {
		t.Errorf("POST with a body over the rate: %d, close %v; want 429 and close", res.StatusCode, res.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the 429 to a request with a body: read %v, want EOF", err)
	}

	// Connection: close is honoured on a 429 too.
	conn, br = dial("127.0.0.1")
	res = do(conn, br, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if res.StatusCode != 429 || !res.Close {
		t.Errorf("GET with Connection: close over the rate: %d, close %v; want 429 and close", res.StatusCode, res.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the 429 to Connection: close: read %v, want EOF", err)
	}
}
