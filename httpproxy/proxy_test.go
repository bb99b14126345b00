package httpproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"clb/balancer"
	"clb/config"
	"clb/policy"
)

// expectRouted checks the X-CLB-* fields an instance received against the
// balancer.
func (c *cluster) expectRouted(r *http.Request, at, key, previous string) {
	c.t.Helper()
	d := c.bal.Table().RouteFor(balancer.HTTP, key, previous, time.Now())
	if at != d.Owner.Name {
		c.t.Errorf("%s went to %s; the owner of %q is %s", r.URL, at, key, d.Owner.Name)
	}
	want := map[string]string{"X-Clb-Key": policy.EscapeKey(key), "X-Clb-Instance": d.Owner.Name, "X-Clb-Cluster": d.Owner.ClusterName()}
	if d.Replica != nil {
		want["X-Clb-Replica"] = d.Replica.Name
	}
	if d.Previous != nil {
		want["X-Clb-Previous"] = d.Previous.Name
	}
	for _, h := range []string{"X-Clb-Key", "X-Clb-Instance", "X-Clb-Cluster", "X-Clb-Replica", "X-Clb-Previous"} {
		if got := r.Header.Values(h); strings.Join(got, ",") != want[h] {
			c.t.Errorf("%s at %s: %s %q, want %q", r.URL, at, h, got, want[h])
		}
	}
}

func servedBy(res *http.Response) string { return res.Header.Get("X-Served-By") }

// TestSessionSticks: a client without a cookie gets a new key and stays on
// one instance for 100 requests.
func TestSessionSticks(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 4})
	cl := c.client()
	first := c.get(cl, "/page")
	key, ok := setCookie(first, keyCookie)
	if !ok || len(key) != 22 {
		t.Fatalf("CLBKEY %q (set %v), want 22 characters", key, ok)
	}
	if route, _ := setCookie(first, routeCookie); route != servedBy(first) {
		t.Errorf("CLBROUTE %q, served by %s", route, servedBy(first))
	}
	for _, ck := range first.Cookies() {
		if ck.Path != "/" || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode {
			t.Errorf("cookie %s attributes: %v", ck.Name, ck)
		}
	}
	c.expectRouted(c.lastRequest(servedBy(first)), servedBy(first), key, "")
	for i := range 99 {
		res := c.get(cl, fmt.Sprintf("/page/%d", i))
		if servedBy(res) != servedBy(first) {
			t.Fatalf("request %d went to %s, the session is on %s", i, servedBy(res), servedBy(first))
		}
		if len(res.Cookies()) != 0 {
			t.Fatalf("request %d re-set cookies %v", i, res.Cookies())
		}
	}
	// Keep-alive to the instance: 100 requests, one connection.
	if n := c.backends[servedBy(first)].conns.Load(); n != 1 {
		t.Errorf("%d connections to the instance for 100 requests", n)
	}
}

// TestRuleKey: a rule on the user query parameter puts alice where clb route
// puts "user:alice", with the X-CLB-* fields clb route would give, and sets
// CLBKEY so that later requests without the parameter keep the key.
func TestRuleKey(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 5, rules: []config.Rule{{Query: "user", Prefix: "user:"}}})
	cl := c.client()
	res := c.get(cl, "/login?user=alice")
	route := c.bal.Table().Route("user:alice", "", time.Now()) // what clb route prints
	if servedBy(res) != route.Owner.Name {
		t.Fatalf("alice served by %s, clb route says %s", servedBy(res), route.Owner.Name)
	}
	got := c.lastRequest(servedBy(res))
	c.expectRouted(got, servedBy(res), "user:alice", "")
	if got.Header.Get("X-Clb-Replica") != route.Replica.Name {
		t.Errorf("X-CLB-Replica %q, clb route says %s", got.Header.Get("X-Clb-Replica"), route.Replica.Name)
	}
	if v, _ := setCookie(res, keyCookie); v != policy.EscapeKey("user:alice") {
		t.Errorf("CLBKEY %q", v)
	}
	if res := c.get(cl, "/inbox"); servedBy(res) != route.Owner.Name {
		t.Errorf("without the parameter, served by %s", servedBy(res))
	}
	c.expectRouted(c.lastRequest(route.Owner.Name), route.Owner.Name, "user:alice", route.Owner.Name)
}

// TestSpoofedCLBHeaders: no X-CLB-* field of the client's reaches an
// instance; X-Forwarded-* are set.
func TestSpoofedCLBHeaders(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3})
	cl := c.client()
	res := c.get(cl, "/x", "X-CLB-Replica", "evil", "x-clb-previous", "evil", "X-Forwarded-For", "10.9.9.9", "Connection", "X-Secret", "X-Secret", "1")
	got := c.lastRequest(servedBy(res))
	for h, vs := range got.Header {
		for _, v := range vs {
			if v == "evil" {
				t.Errorf("the client's %s reached the instance", h)
			}
		}
	}
	if got.Header.Get("X-Secret") != "" {
		t.Error("a field named in Connection reached the instance")
	}
	if xff := got.Header.Get("X-Forwarded-For"); xff != "10.9.9.9, 127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", xff)
	}
	if got.Header.Get("X-Forwarded-Proto") != "http" || got.Header.Get("X-Forwarded-Host") == "" {
		t.Errorf("X-Forwarded-Proto %q Host %q", got.Header.Get("X-Forwarded-Proto"), got.Header.Get("X-Forwarded-Host"))
	}
}

// TestFailoverToReplica: when an instance's listener closes, its sessions go
// to their replica partner, with X-CLB-Previous, and CLBROUTE is re-issued.
func TestFailoverToReplica(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 4})
	cl := c.client()
	first := c.get(cl, "/")
	owner := servedBy(first)
	key, _ := setCookie(first, keyCookie)
	d := c.bal.Table().RouteFor(balancer.HTTP, key, "", time.Now())
	c.backends[owner].srv.Close()

	res := c.get(cl, "/after")
	if res.StatusCode != 200 || servedBy(res) != d.Replica.Name {
		t.Fatalf("after %s closed: %d from %s, want the replica partner %s", owner, res.StatusCode, servedBy(res), d.Replica.Name)
	}
	got := c.lastRequest(d.Replica.Name)
	if got.Header.Get("X-Clb-Previous") != owner {
		t.Errorf("X-CLB-Previous %q, want %s", got.Header.Get("X-Clb-Previous"), owner)
	}
	if route, ok := setCookie(res, routeCookie); !ok || route != d.Replica.Name {
		t.Errorf("CLBROUTE re-issued as %q (%v), want %s", route, ok, d.Replica.Name)
	}
}

// TestPostNotRetried: a POST whose body reached the instance is not sent
// again elsewhere when the instance then fails.
func TestPostNotRetried(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3})
	cl := c.client()
	first := c.get(cl, "/")
	owner := servedBy(first)
	c.backends[owner].handle = func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // the body was read; no answer
		}
	}
	before := c.total()
	res, err := cl.Post(c.url+"/pay", "text/plain", strings.NewReader("amount=10"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 502 {
		t.Errorf("status %d, want 502", res.StatusCode)
	}
	if n := c.total() - before; n != 1 {
		t.Errorf("the POST reached instances %d times, want once", n)
	}
	if _, bodies := c.backends[owner].requests(); bodies[len(bodies)-1] != "amount=10" {
		t.Errorf("body at the instance %q", bodies[len(bodies)-1])
	}
}

// TestIdempotentRetried: an instance that takes a request without a body
// and closes without answering (it died with the request in flight) has an
// idempotent one sent again to the key's replica partner; a POST is not.
func TestIdempotentRetried(t *testing.T) {
	for _, c := range []struct {
		method string
		want   int // 0: the replica partner answers
	}{{"GET", 0}, {"PUT", 0}, {"DELETE", 0}, {"POST", 502}} {
		t.Run(c.method, func(t *testing.T) {
			cl4 := newCluster(t, clusterOptions{n: 3})
			cl := cl4.client()
			first := cl4.get(cl, "/")
			owner := servedBy(first)
			key, _ := setCookie(first, keyCookie)
			d := cl4.bal.Table().RouteFor(balancer.HTTP, key, "", time.Now())
			cl4.backends[owner].handle = func(w http.ResponseWriter, r *http.Request) {
				if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
					conn.Close()
				}
			}
			before := cl4.total()
			req, _ := http.NewRequest(c.method, cl4.url+"/counter?next=2", nil)
			res, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			switch {
			case c.want != 0:
				if res.StatusCode != c.want || cl4.total()-before != 1 {
					t.Errorf("%s: %d after %d attempts, want %d after one", c.method, res.StatusCode, cl4.total()-before, c.want)
				}
			case res.StatusCode != 200 || servedBy(res) != d.Replica.Name:
				t.Errorf("%s: %d from %s, want 200 from the replica partner %s", c.method, res.StatusCode, servedBy(res), d.Replica.Name)
			case cl4.lastRequest(d.Replica.Name).Header.Get("X-Clb-Previous") != owner:
				t.Errorf("X-CLB-Previous %q, want %s", cl4.lastRequest(d.Replica.Name).Header.Get("X-Clb-Previous"), owner)
			}
		})
	}
}

// TestRestartedInstanceNotBlamed: when an instance restarts, the idle
// connections kept to it are all closed; requests then go on new
// connections to it, without a failure reported or a retry elsewhere.
func TestRestartedInstanceNotBlamed(t *testing.T) {
	var mu sync.Mutex
	var failures []string
	c := newCluster(t, clusterOptions{n: 2, report: func(name string, ok bool) {
		if !ok {
			mu.Lock()
			failures = append(failures, name)
			mu.Unlock()
		}
	}})
	cl := c.client()
	owner := servedBy(c.get(cl, "/"))
	// Four requests at once leave four idle connections to the owner.
	var arrived sync.WaitGroup
	arrived.Add(4)
	c.backends[owner].handle = func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		arrived.Wait()
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := cl.Get(c.url + "/together")
			if err == nil {
				res.Body.Close()
			}
		}()
	}
	wg.Wait()
	c.backends[owner].handle = nil
	c.backends[owner].srv.CloseClientConnections() // the restart
	for _, method := range []string{"GET", "GET", "POST"} {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("x")
		}
		req, _ := http.NewRequest(method, c.url+"/after", body)
		res, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || servedBy(res) != owner {
			t.Errorf("%s after the restart: %d from %s, want 200 from %s", method, res.StatusCode, servedBy(res), owner)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) != 0 {
		t.Errorf("failures reported: %v", failures)
	}
}

// TestWebSocket: an upgrade goes to the key's owner, and bytes pass both
// ways through the tunnel.
func TestWebSocket(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3})
	for _, b := range c.backends {
		b.handle = func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") != "websocket" {
				http.Error(w, "not an upgrade", 400)
				return
			}
			echoWebSocket(w, r)
		}
	}
	conn := dialRaw(t, c.server.Addr())
	fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: CLBKEY=ws-user\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	if res.Header.Get("Sec-Websocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("accept %q", res.Header.Get("Sec-Websocket-Accept"))
	}
	d := c.bal.Table().RouteFor(balancer.HTTP, "ws-user", "", time.Now())
	if got := c.backends[d.Owner.Name].count(); got != 1 {
		t.Errorf("the owner %s got %d upgrades", d.Owner.Name, got)
	}
	for _, msg := range []string{"hello", "world, again"} {
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q, %v", buf, err)
		}
	}
}

// TestNoInstance: 503 with Retry-After when no instance is live.
func TestNoInstance(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 2})
	for _, n := range c.names {
		if err := c.bal.Disable(n, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	res := c.get(c.client(), "/")
	if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" {
		t.Errorf("status %d, Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}
}

// TestUpstreamTimeout: an instance that does not answer within
// response_timeout gives 504.
func TestUpstreamTimeout(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, limits: func(l *config.HTTP) { l.ResponseTimeout = 200 * time.Millisecond }})
	release := make(chan struct{})
	defer close(release)
	c.backends["app1"].handle = func(w http.ResponseWriter, r *http.Request) { <-release }
	res := c.get(c.client(), "/slow")
	if res.StatusCode != 504 {
		t.Errorf("status %d, want 504", res.StatusCode)
	}
}

// TestChunked: chunked bodies pass both ways; an HTTP/1.0 client gets the
// body without chunk framing.
func TestChunked(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 2})
	for _, b := range c.backends {
		b.handle = func(w http.ResponseWriter, r *http.Request) {
			for _, part := range []string{"one ", "two ", "three"} {
				io.WriteString(w, part)
				w.(http.Flusher).Flush() // forces chunked
			}
		}
	}
	conn := dialRaw(t, c.server.Addr())
	fmt.Fprint(conn, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if string(body) != "one two three" || len(res.TransferEncoding) == 0 {
		t.Errorf("body %q, transfer encoding %v", body, res.TransferEncoding)
	}
	if _, bodies := c.backends[servedBy(res)].requests(); bodies[0] != "hello world" {
		t.Errorf("the instance got %q", bodies[0])
	}

	conn10 := dialRaw(t, c.server.Addr())
	fmt.Fprint(conn10, "GET /old HTTP/1.0\r\n\r\n")
	raw, err := io.ReadAll(conn10) // to EOF: the body ends with the connection
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(raw), "\r\n\r\none two three") || strings.Contains(strings.ToLower(string(raw)), "transfer-encoding") {
		t.Errorf("HTTP/1.0 response:\n%s", raw)
	}
}

// TestShutdownFinishesInFlight: when Serve's context ends, a request in
// flight still gets its whole response, new connections are refused, and
// Serve returns once the request is done.
func TestShutdownFinishesInFlight(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1})
	entered, release := make(chan struct{}), make(chan struct{})
	c.backends["app1"].handle = func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "finished")
	}
	result := make(chan string, 1)
	go func() {
		res, err := c.client().Get(c.url + "/long")
		if err != nil {
			result <- err.Error()
			return
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		result <- string(body)
	}()
	<-entered
	c.stop()
	select {
	case <-c.stopped:
		t.Fatal("Serve returned with a request in flight")
	default:
	}
	close(release)
	if got := <-result; got != "finished" {
		t.Errorf("in-flight request got %q", got)
	}
	<-c.stopped
	if conn, err := net.Dial("tcp", c.server.Addr()); err == nil {
		conn.Close()
		t.Error("the listener is still open after Serve returned")
	}
}

// TestConnectionLimit: at http.max_connections clb stops accepting; the next
// client waits in the backlog and is served once a connection closes.
func TestConnectionLimit(t *testing.T) {
	log, limited := logWatch("http connection limit reached")
	c := newCluster(t, clusterOptions{n: 1, logger: log, limits: func(l *config.HTTP) { l.MaxConnections = 2 }})
	const req = "GET /x HTTP/1.1\r\nHost: clb\r\n\r\n"
	var held []net.Conn
	for range 2 {
		conn := dialRaw(t, c.server.Addr())
		held = append(held, conn)
		conn.Write([]byte(req))
		if res := readResponse(t, conn); res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	select {
	case <-limited:
	case <-time.After(10 * time.Second):
		t.Fatal("two connections open and no limit reached")
	}
	waiting := dialRaw(t, c.server.Addr()) // completes in the backlog
	waiting.Write([]byte(req))
	// Not answered while the limit holds: an unenforced limit would answer
	// within a few milliseconds.
	_ = waiting.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := waiting.Read(make([]byte, 1)); n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the client beyond the limit got an answer (%d bytes, %v)", n, err)
	}
	_ = waiting.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n := c.total(); n != 2 {
		t.Fatalf("%d requests reached the back end while the limit held, want 2", n)
	}
	held[0].Close()
	if res := readResponse(t, waiting); res.StatusCode != 200 {
		t.Fatalf("waiting client: status %d", res.StatusCode)
	}
	if n := c.total(); n != 3 {
		t.Errorf("%d requests reached the back end, want 3", n)
	}
}

// TestWebSocketOutlivesTimeouts: a tunnel is quiet for longer than every
// HTTP timeout and still carries both ways (the deadlines of its upgrade
// exchange do not stay on the tunnel's sockets).
func TestWebSocketOutlivesTimeouts(t *testing.T) {
	const timeout = 100 * time.Millisecond
	c := newCluster(t, clusterOptions{n: 1, limits: func(h *config.HTTP) {
		h.ReadHeaderTimeout, h.IdleTimeout, h.WriteTimeout, h.ResponseTimeout = timeout, timeout, timeout, timeout
	}})
	for _, b := range c.backends {
		b.handle = echoWebSocket
	}
	conn := dialRaw(t, c.server.Addr())
	fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	for i, msg := range []string{"before", "after the timeouts"} {
		if i > 0 {
			<-time.After(4 * timeout) // the quiet spell under test, not a wait for an event
		}
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %d: %q, %v", i, buf, err)
		}
	}
}
