package httpproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
)

// rawBackend is an instance that answers each request with bytes a test
// chose, well-formed or not, and counts what reached it.
type rawBackend struct {
	ln       net.Listener
	requests atomic.Int32
	conns    atomic.Int32
	// answer gives the bytes for the n-th request (from 1); after gives
	// bytes to send once the answer is out, then signals sent.
	answer func(n int, r *http.Request) string
	after  func(n int) string
	sent   chan struct{}
}

func newRawBackend(t *testing.T, answer func(int, *http.Request) string) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{ln: ln, answer: answer, sent: make(chan struct{}, 16)}
	acceptAll(t, ln, func(c net.Conn) {
		b.conns.Add(1)
		b.serve(c)
	})
	return b
}

func (b *rawBackend) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		n := int(b.requests.Add(1))
		out := b.answer(n, r)
		if _, err := io.WriteString(c, out); err != nil || !strings.Contains(out, "\r\n\r\n") {
			return // a cut answer ends the connection
		}
		if b.after != nil {
			if extra := b.after(n); extra != "" {
				_, _ = io.WriteString(c, extra)
				b.sent <- struct{}{}
			}
		}
	}
}

func (b *rawBackend) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

// rawCluster is clb before a raw back end ("raw") and a well-behaved one
// ("good"); user is a key the raw one owns, whose replica partner is good.
type rawCluster struct {
	url  string
	user string
	good *atomic.Int32 // requests the good one received
}

func newRawCluster(t *testing.T, raw *rawBackend) *rawCluster {
	t.Helper()
	var good atomic.Int32
	gs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		good.Add(1)
		fmt.Fprint(w, "good")
	}))
	t.Cleanup(gs.Close)
	gport, _ := strconv.Atoi(gs.URL[strings.LastIndexByte(gs.URL, ':')+1:])
	addr := func(port int) config.HTTPAddr {
		return config.HTTPAddr{Endpoint: config.Endpoint{Transport: "http", Host: "127.0.0.1", Port: port}}
	}
	bal, err := balancer.New([]config.Instance{
		{Name: "raw", Weight: 100, HTTP: addr(raw.port())},
		{Name: "good", Weight: 100, HTTP: addr(gport)},
	}, loadfactor.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawCluster{good: &good}
	for i := 0; rc.user == ""; i++ {
		if d := bal.Route(fmt.Sprint("u", i), "", time.Now()); d.Owner.Name == "raw" {
			rc.user = fmt.Sprint("u", i)
		}
	}
	limits := config.Defaults().HTTP
	limits.ResponseTimeout = 5 * time.Second
	srv, err := NewServer("127.0.0.1:0", Options{Balancer: bal, Limits: limits, Rules: []config.Rule{{Header: "X-User"}}})
	if err != nil {
		t.Fatal(err)
	}
	serveTest(t, srv)
	rc.url = "http://" + srv.Addr()
	return rc
}

// do sends a request of the raw back end's user and returns status and body.
func (rc *rawCluster) do(t *testing.T, cl *http.Client, method string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, rc.url+"/", nil)
	req.Header.Set("X-User", rc.user)
	res, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// TestBadResponseNotResent: a response clb cannot parse, one cut short, or
// one followed by bytes beyond its framing, gets the client 502; the request
// reached the instance once and is not sent again, neither on another
// connection nor to the replica partner; the connection is not used again.
func TestBadResponseNotResent(t *testing.T) {
	for _, tc := range []struct {
		name, method, answer string
	}{
		{"unparseable status line", "GET", "HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n"},
		{"not HTTP", "GET", "SSH-2.0-OpenSSH_9.2\r\n\r\n"},
		{"two Content-Lengths", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"},
		{"head cut short", "GET", "HTTP/1.1 200 OK\r\nContent-Le"},
		{"body after a response to HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		{"body after 204", "GET", "HTTP/1.1 204 No Content\r\n\r\nsmuggled"},
		{"body after 304", "GET", "HTTP/1.1 304 Not Modified\r\n\r\nsmuggled"},
		{"body after Content-Length: 0", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The first request gets a good answer, so that the bad one
			// comes on a pooled connection: the case a retry would take.
			raw := newRawBackend(t, func(n int, _ *http.Request) string {
				if n == 1 {
					return okAnswer
				}
				return tc.answer
			})
			rc := newRawCluster(t, raw)
			cl := &http.Client{Timeout: 10 * time.Second}
			if st, body := rc.do(t, cl, "GET"); st != 200 || body != "ok" {
				t.Fatalf("first request: %d %q", st, body)
			}
			if st, _ := rc.do(t, cl, tc.method); st != 502 {
				t.Errorf("status %d, want 502", st)
			}
			if n := raw.requests.Load(); n != 2 {
				t.Errorf("the instance got %d requests, want 2 (the bad answer's one once)", n)
			}
			if n := rc.good.Load(); n != 0 {
				t.Errorf("the replica partner got %d requests, want none", n)
			}
			// Next request: a new connection, and a good answer.
			raw.answer = func(int, *http.Request) string { return okAnswer }
			if st, body := rc.do(t, cl, "GET"); st != 200 || body != "ok" {
				t.Errorf("next request: %d %q, want 200 ok", st, body)
			}
			if n := raw.conns.Load(); n != 2 {
				t.Errorf("%d connections to the instance, want 2: the bad one is not reused", n)
			}
		})
	}
}

// TestBytesBeyondLengthNotPooled: bytes after a response's declared length,
// whether they come with the response or later while the connection is
// idle, answer no request: the client keeps its response, the connection is
// not used again, and the next request never reads them as its answer.
func TestBytesBeyondLengthNotPooled(t *testing.T) {
	const forged = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
	for _, tc := range []struct {
		name  string
		with  string // appended to the first answer
		after string // sent on the idle connection after it
	}{
		{name: "with the response", with: forged},
		{name: "while idle", after: forged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := newRawBackend(t, func(n int, _ *http.Request) string {
				if n == 1 {
					return okAnswer + tc.with
				}
				return okAnswer
			})
			raw.after = func(n int) string {
				if n == 1 {
					return tc.after
				}
				return ""
			}
			rc := newRawCluster(t, raw)
			cl := &http.Client{Timeout: 10 * time.Second}
			if st, body := rc.do(t, cl, "GET"); st != 200 || body != "ok" {
				t.Fatalf("first request: %d %q", st, body)
			}
			if tc.after != "" {
				<-raw.sent
			}
			for i := range 2 {
				if st, body := rc.do(t, cl, "GET"); st != 200 || body != "ok" {
					t.Errorf("request %d: %d %q, want 200 ok", i+2, st, body)
				}
			}
			if n := raw.requests.Load(); n != 3 {
				t.Errorf("the instance got %d requests, want 3", n)
			}
			if n := raw.conns.Load(); n != 2 {
				t.Errorf("%d connections to the instance, want 2: the one with stray bytes closed, the next reused", n)
			}
		})
	}
}

// TestReusedClosedUnderRequestResent: a pooled connection the instance
// closes once the request is on it, before any byte of a response (the
// close raced the reuse: no probe or event could have seen it), has a GET
// sent again to the same instance on a new connection, and the replica
// partner gets nothing.
func TestReusedClosedUnderRequestResent(t *testing.T) {
	raw := newRawBackend(t, func(n int, _ *http.Request) string {
		if n == 2 {
			return "" // closed, no answer
		}
		return okAnswer
	})
	rc := newRawCluster(t, raw)
	cl := &http.Client{Timeout: 10 * time.Second}
	for i := range 2 {
		if st, body := rc.do(t, cl, "GET"); st != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q, want 200 ok", i+1, st, body)
		}
	}
	if n := raw.requests.Load(); n != 3 {
		t.Errorf("the instance got %d requests, want 3 (the second twice)", n)
	}
	if n := raw.conns.Load(); n != 2 {
		t.Errorf("%d connections to the instance, want 2: the resend on a new one", n)
	}
	if n := rc.good.Load(); n != 0 {
		t.Errorf("the replica partner got %d requests, want none", n)
	}
}
