package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
	"clb/metrics"
	"clb/netpark/netparktest"
)

// The event loops (evloop_linux.go): what they serve themselves, what they
// hand to a goroutine, back-pressure, their timeouts, shutdown, and that
// both paths send the same bytes.

func (c *cluster) handed(why handReason) int64 { return c.server.loops.handed[why].Load() }

func (c *cluster) relays() int64 {
	<-c.server.loops.started
	return c.server.loops.relays()
}

func TestLoopServesCommonExchange(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1})
	conn := dialRaw(t, c.server.Addr())
	br := bufio.NewReader(conn)
	res, body := sendRecv(t, conn, br, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	if res.StatusCode != 200 || body != "app1 /a" {
		t.Fatalf("GET: %d %q", res.StatusCode, body)
	}
	res, body = sendRecv(t, conn, br, "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if res.StatusCode != 200 || body != "app1 /b" {
		t.Fatalf("POST: %d %q", res.StatusCode, body)
	}
	if _, bodies := c.backends["app1"].requests(); bodies[1] != "hello" {
		t.Errorf("the instance got body %q", bodies[1])
	}
	if n := c.relays(); n != 2 {
		t.Errorf("%d responses relayed in a loop, want 2", n)
	}
	for why := range handReasons {
		if n := c.handed(why); n != 0 {
			t.Errorf("%d hand-offs (reason %d) for two plain requests", n, why)
		}
	}
}

// Each reason to leave the loop, and the request served all the same.
func TestLoopHandOffs(t *testing.T) {
	const cookie = "Cookie: CLBKEY=handoff\r\n"
	big := strings.Repeat("b", 10000)
	for _, tc := range []struct {
		name   string
		why    handReason
		parts  []string // written one after another, each after the loop has seen the one before
		status int
		body   string // the instance got
	}{
		{"chunked body", handBody, []string{"POST /c HTTP/1.1\r\nHost: x\r\n" + cookie + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"}, 200, "hello"},
		{"large body", handBody, []string{"POST /l HTTP/1.1\r\nHost: x\r\n" + cookie + "Content-Length: 10000\r\n\r\n" + big}, 200, big},
		{"body to come", handBody, []string{"POST /p HTTP/1.1\r\nHost: x\r\n" + cookie + "Content-Length: 5\r\n\r\nhe", "llo"}, 200, "hello"},
		{"split head", handHead, []string{"GET /s HTTP/1.1\r\nHo", "st: x\r\n" + cookie + "\r\n"}, 200, ""},
		{"head too large", handHead, []string{"GET /t HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("h", 40<<10) + "\r\n\r\n"}, 431, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, clusterOptions{n: 1})
			conn := dialRaw(t, c.server.Addr())
			for i, p := range tc.parts {
				if _, err := io.WriteString(conn, p); err != nil {
					t.Fatal(err)
				}
				if i < len(tc.parts)-1 {
					netparktest.Until(t, "the loop hands the connection off", func() bool { return c.handed(tc.why) == 1 })
				}
			}
			res := readResponse(t, conn)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			if n := c.handed(tc.why); n != 1 {
				t.Errorf("%d hand-offs for reason %d, want 1", n, tc.why)
			}
			if tc.status == 200 {
				if _, bodies := c.backends["app1"].requests(); len(bodies) != 1 || bodies[0] != tc.body {
					t.Errorf("the instance got %d bodies, the first %.20q", len(bodies), bodies)
				}
				// The connection is back in a loop for the next request.
				before := c.relays()
				res, _ := sendRecv(t, conn, bufio.NewReader(conn), "GET /next HTTP/1.1\r\nHost: x\r\n"+cookie+"\r\n")
				if res.StatusCode != 200 || c.relays() != before+1 {
					t.Errorf("next request: %d, %d relayed in a loop", res.StatusCode, c.relays()-before)
				}
			}
		})
	}
}

func TestLoopHandOffExpectAndUpgrade(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1})
	conn := dialRaw(t, c.server.Addr())
	br := bufio.NewReader(conn)
	io.WriteString(conn, "POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("%q %v, want 100 Continue", line, err)
	}
	br.ReadString('\n')
	io.WriteString(conn, "hello")
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != 200 {
		t.Fatalf("after 100: %v %v", res, err)
	}
	if n := c.handed(handBody); n != 1 {
		t.Errorf("Expect: %d hand-offs, want 1", n)
	}

	c.backends["app1"].handle = echoWebSocket
	ws := dialRaw(t, c.server.Addr())
	wbr := bufio.NewReader(ws)
	io.WriteString(ws, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	res, err := http.ReadResponse(wbr, nil)
	if err != nil || res.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	io.WriteString(ws, "ping")
	echo := make([]byte, 4)
	if _, err := io.ReadFull(wbr, echo); err != nil || string(echo) != "ping" {
		t.Fatalf("tunnel echoed %q %v", echo, err)
	}
	if n := c.handed(handUpgrade); n != 1 {
		t.Errorf("upgrade: %d hand-offs, want 1", n)
	}
}

// An owner whose port refuses: the loop's connect fails, and the
// goroutine path sends the request to the replica partner.
func TestLoopRefusedOwnerToPartner(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 2})
	cl := c.client()
	first := c.get(cl, "/one")
	owner := servedBy(first)
	c.backends[owner].srv.Close()
	res := c.get(cl, "/two")
	if res.StatusCode != 200 || servedBy(res) == owner || servedBy(res) == "" {
		t.Fatalf("owner %s down: %d from %q, want 200 from its partner", owner, res.StatusCode, servedBy(res))
	}
	if n := c.handed(handFailed); n < 1 {
		t.Errorf("%d hand-offs after a failed attempt, want at least 1", n)
	}
}

// loopConns is what the loops see of their client connections.
type loopConn struct {
	phase   phase
	pending int
	events  uint32
}

func (c *cluster) loopConns(t *testing.T) []loopConn {
	t.Helper()
	var out []loopConn
	if !c.server.loops.do(func(l *loop) {
		for _, fc := range l.conns {
			if fc.cc != nil {
				out = append(out, loopConn{fc.phase, len(fc.pending), fc.events})
			}
		}
	}) {
		t.Fatal("the loops have stopped")
	}
	return out
}

// stallClient pipelines n requests for 12 KiB answers on a connection
// whose receive buffer is small, and reads nothing until the loop holds a
// response it cannot write: it returns the connection then.
func stallClient(t *testing.T, c *cluster, n int) net.Conn {
	t.Helper()
	answer := strings.Repeat("z", 12<<10)
	c.backends["app1"].handle = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(answer))) // not chunked: the loop relays it
		io.WriteString(w, answer)
	}
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", c.server.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		for range n {
			if _, err := io.WriteString(conn, "GET /z HTTP/1.1\r\nHost: x\r\nCookie: CLBKEY=slow\r\n\r\n"); err != nil {
				return
			}
		}
	}()
	netparktest.Until(t, "a response waits for the client", func() bool {
		lc := c.loopConns(t)
		return len(lc) == 1 && lc[0].phase == cFlush && lc[0].pending > 0
	})
	return conn
}

// A client that does not read: the loop holds at most the response under
// way, stops reading the client (no input interest: no busy loop on it)
// and forwards no more requests until it drains.
func TestLoopBackPressure(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1})
	const n = 1000
	conn := stallClient(t, c, n)
	lc := c.loopConns(t)[0]
	if lc.pending > 13<<10 {
		t.Errorf("%d bytes pending for a slow client, want at most one response", lc.pending)
	}
	if lc.events&unix.EPOLLIN != 0 || lc.events&unix.EPOLLOUT == 0 {
		t.Errorf("events %#x while stalled, want output only", lc.events)
	}
	if got := c.backends["app1"].count(); got >= n {
		t.Errorf("all %d requests forwarded to a client that reads nothing", got)
	}
	br := bufio.NewReader(conn)
	for i := range n {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || len(body) != 12<<10 {
			t.Fatalf("response %d: %d, %d bytes", i, res.StatusCode, len(body))
		}
	}
	if got := c.backends["app1"].count(); got != n {
		t.Errorf("the instance got %d requests, want %d", got, n)
	}
}

// fakeClock is a loop clock a test moves.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	f := &fakeClock{}
	f.ns.Store(time.Now().UnixNano())
	return f
}

func (f *fakeClock) now() time.Time      { return time.Unix(0, f.ns.Load()) }
func (f *fakeClock) add(d time.Duration) { f.ns.Add(int64(d)) }
func (c *cluster) poke(t *testing.T)     { c.loopConns(t) }
func (c *cluster) advance(t *testing.T, f *fakeClock, d time.Duration) {
	f.add(d)
	c.poke(t) // a pass of each loop at the new time
}

// A stalled client's write timeout, on the loop's clock.
func TestLoopWriteTimeout(t *testing.T) {
	clock := newFakeClock()
	c := newCluster(t, clusterOptions{n: 1, loopClock: clock.now})
	conn := stallClient(t, c, 1000)
	c.advance(t, clock, config.Defaults().HTTP.WriteTimeout+time.Second)
	netparktest.Until(t, "the stalled connection is closed", func() bool { return c.open() == 0 })
	if _, err := io.Copy(io.Discard, conn); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading the rest: %v", err)
	}
}

// An instance that does not answer: 504 once ResponseTimeout has passed
// on the loop's clock.
func TestLoopResponseTimeout(t *testing.T) {
	clock := newFakeClock()
	var reported atomic.Int32
	c := newCluster(t, clusterOptions{n: 1, loopClock: clock.now, report: func(_ string, ok bool) {
		if !ok {
			reported.Add(1)
		}
	}})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	c.backends["app1"].handle = func(w http.ResponseWriter, r *http.Request) { <-release }
	conn := dialRaw(t, c.server.Addr())
	io.WriteString(conn, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	netparktest.Until(t, "the request reaches the instance", func() bool { return c.backends["app1"].count() == 1 })
	c.advance(t, clock, config.Defaults().HTTP.ResponseTimeout-time.Second)
	if lc := c.loopConns(t); len(lc) != 1 || lc[0].phase != cExchange {
		t.Fatalf("before the timeout: %+v, want the request under way", lc)
	}
	c.advance(t, clock, 2*time.Second)
	res := readResponse(t, conn)
	if res.StatusCode != 504 {
		t.Fatalf("status %d, want 504", res.StatusCode)
	}
	if reported.Load() != 1 {
		t.Errorf("%d failures reported, want 1", reported.Load())
	}
}

// Shutdown with connections in the loops: an idle one is closed, the one
// with a request under way gets its response (Connection: close), and
// Serve returns.
func TestLoopShutdown(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, linger: time.Hour})
	idle := dialRaw(t, c.server.Addr())
	ibr := bufio.NewReader(idle)
	roundTrip(t, idle, ibr)
	roundTrip(t, idle, ibr) // busy: it lingers in its loop, not parked
	if lc := c.loopConns(t); len(lc) != 1 || lc[0].phase != cIdle {
		t.Fatalf("%+v, want one idle connection in a loop", lc)
	}
	release := make(chan struct{})
	c.backends["app1"].handle = func(w http.ResponseWriter, r *http.Request) { <-release; io.WriteString(w, "late") }
	busy := dialRaw(t, c.server.Addr())
	io.WriteString(busy, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	netparktest.Until(t, "the request reaches the instance", func() bool { return c.backends["app1"].count() == 3 })
	c.stop()
	if _, err := ibr.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: %v, want EOF", err)
	}
	close(release)
	res := readResponse(t, busy)
	if res.StatusCode != 200 || !res.Close {
		t.Errorf("in flight: %d, close %v; want 200 and Connection: close", res.StatusCode, res.Close)
	}
	select {
	case <-c.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// recorder is an instance that keeps every byte it receives and answers
// each request with fixed bytes.
type recorder struct {
	ln  net.Listener
	mu  sync.Mutex
	got bytes.Buffer
}

func newRecorder(t *testing.T) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	acceptAll(t, ln, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(io.TeeReader(c, writerFunc(func(p []byte) (int, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.got.Write(p)
		})))
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			answer := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Up: 1\r\nContent-Length: 2\r\n\r\nok"
			if req.Method == "HEAD" {
				answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
			}
			io.WriteString(c, answer)
		}
	})
	return r
}

// The loop and the goroutine path send an instance and a client the same
// bytes for the same requests.
func TestLoopSameBytesAsGoroutines(t *testing.T) {
	const ck = "Cookie: CLBKEY=same; CLBROUTE=app1\r\n"
	sessions := [][]string{{
		"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n" + ck + "X-Forwarded-For: 10.0.0.1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: drop\r\nX-CLB-Key: forged\r\nUser-Agent: t\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\n" + ck + "Content-Length: 5\r\n\r\nhello",
		"HEAD /h HTTP/1.1\r\nHost: h\r\n" + ck + "\r\n",
		"GET /nokey HTTP/1.1\r\nHost: h\r\nCookie: CLBKEY=other\r\n\r\n",
		"GET /10 HTTP/1.0\r\nHost: h\r\n" + ck + "\r\n",
	}, {
		"GET /bad HTTP/1.1\nHost: h\n\n",
	}, {
		"GET /cl HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	}}
	run := func(noLoop bool) (up, down string) {
		rec := newRecorder(t)
		srv, stop := loopServer(t, rec.ln.Addr().(*net.TCPAddr).Port, func(s *Server) { s.noLoop = noLoop })
		var client bytes.Buffer
		for _, reqs := range sessions {
			conn := dialRaw(t, srv.Addr())
			br := bufio.NewReader(conn)
			for _, req := range reqs {
				io.WriteString(conn, req)
				res, err := http.ReadResponse(bufio.NewReader(io.TeeReader(br, &client)), &http.Request{Method: strings.Fields(req)[0]})
				if err != nil {
					t.Fatalf("%q: %v", req, err)
				}
				io.ReadAll(res.Body)
			}
			conn.Close()
		}
		if !noLoop && srv.loops.relays() == 0 {
			t.Error("nothing relayed in a loop")
		}
		stop()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		norm := func(s string) string { return strings.ReplaceAll(s, srv.via, "VIA") }
		return norm(rec.got.String()), norm(client.String())
	}
	loopUp, loopDown := run(false)
	goUp, goDown := run(true)
	if loopUp != goUp {
		t.Errorf("to the instance, loop:\n%s\ngoroutines:\n%s", loopUp, goUp)
	}
	if loopDown != goDown {
		t.Errorf("to the client, loop:\n%s\ngoroutines:\n%s", loopDown, goDown)
	}
	if !strings.Contains(loopUp, "POST /p") || !strings.Contains(loopDown, "400 Bad Request") {
		t.Errorf("the sessions did not run as meant:\n%s\n%s", loopUp, loopDown)
	}
}

// A response handed to a goroutine in mid-body goes on under
// ResponseTimeout's no-progress bound: an instance that stalls after its
// first chunk is cut off, and the client sees the response cut short.
func TestLoopHandedResponseStalls(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, limits: func(l *config.HTTP) { l.ResponseTimeout = 300 * time.Millisecond }})
	release, cut := make(chan struct{}), make(chan struct{}, 1)
	t.Cleanup(func() { close(release) })
	c.backends["app1"].handle = func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "one ")
		w.(http.Flusher).Flush() // chunked: handed to a goroutine
		select {
		case <-release:
		case <-r.Context().Done(): // clb closed the instance connection
			cut <- struct{}{}
		}
	}
	conn := dialRaw(t, c.server.Addr())
	io.WriteString(conn, "GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	if err == nil || string(body) != "one " {
		t.Errorf("body %q, error %v; want %q cut short", body, err, "one ")
	}
	if n := c.handed(handResponse); n != 1 {
		t.Errorf("%d responses handed off, want 1", n)
	}
	select {
	case <-cut:
	case <-time.After(10 * time.Second):
		t.Fatal("the instance connection was not closed")
	}
}

// emptyReads is the loops' reads of an instance connection that found
// nothing.
func (c *cluster) emptyReads(t *testing.T) (n int64) {
	t.Helper()
	if !c.server.loops.do(func(l *loop) { n += l.emptyReads }) {
		t.Fatal("the loops have stopped")
	}
	return n
}

// A pooled instance connection is reused without a read to probe it
// first: the reads of instance connections are the responses' own.
func TestLoopReuseWithoutProbe(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1})
	conn := dialRaw(t, c.server.Addr())
	br := bufio.NewReader(conn)
	const n = 5
	for i := range n {
		if res, body := sendRecv(t, conn, br, "GET /r HTTP/1.1\r\nHost: x\r\n\r\n"); res.StatusCode != 200 {
			t.Fatalf("request %d: %d %q", i+1, res.StatusCode, body)
		}
	}
	if got := c.backends["app1"].conns.Load(); got != 1 {
		t.Fatalf("%d connections to the instance, want 1: the pooled one reused", got)
	}
	if got := c.relays(); got != n {
		t.Errorf("%d responses relayed in a loop, want %d", got, n)
	}
	if got := c.emptyReads(t); got != 0 {
		t.Errorf("%d reads of an instance connection found nothing, want 0: no probe before a reuse", got)
	}
}

// An instance that closes an idle pooled connection costs the next request
// nothing, even when the request comes in the same pass as the close and
// ahead of it: the loop evicts the connection first, and the request goes
// on a new one, with no failed attempt on the closed one.
func TestLoopIdleCloseSeenBeforeReuse(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, linger: time.Hour})
	app := c.backends["app1"]
	conn := dialRaw(t, c.server.Addr())
	br := bufio.NewReader(conn)
	const get = "GET /i HTTP/1.1\r\nHost: x\r\n\r\n"
	for range 2 { // busy: it lingers in its loop, not parked
		if res, body := sendRecv(t, conn, br, get); res.StatusCode != 200 {
			t.Fatalf("request: %d %q", res.StatusCode, body)
		}
	}
	// Hold the client's loop until the next request and then the instance's
	// close are both on its sockets.
	held, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		var err error
		c.server.loops.do(func(l *loop) {
			if len(l.conns) == 0 {
				return
			}
			var fds []unix.PollFd
			for _, fc := range l.conns {
				if fc.phase != cIdle && fc.phase != uIdle {
					err = fmt.Errorf("a connection in phase %d, want idle ones", fc.phase)
				}
				fds = append(fds, unix.PollFd{Fd: int32(fc.fd), Events: unix.POLLIN})
			}
			if len(fds) != 2 {
				err = fmt.Errorf("%d connections in the loop, want the client and the pooled one", len(fds))
			}
			close(held)
			<-release
			for err == nil && len(fds) > 0 {
				n, perr := unix.Poll(fds, 10000)
				switch {
				case perr == unix.EINTR:
					continue
				case perr != nil:
					err = perr
				case n == 0:
					err = errors.New("the request or the close did not reach the loop's sockets")
				}
				fds = slices.DeleteFunc(fds, func(f unix.PollFd) bool { return f.Revents != 0 })
			}
		})
		done <- err
	}()
	<-held
	if _, err := io.WriteString(conn, get); err != nil {
		t.Fatal(err)
	}
	app.srv.CloseClientConnections() // returns once closed
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := io.ReadAll(res.Body); res.StatusCode != 200 {
		t.Fatalf("request after the close: %d %q", res.StatusCode, body)
	}
	if got := app.conns.Load(); got != 2 {
		t.Errorf("%d connections to the instance, want 2", got)
	}
	if got := app.count(); got != 3 {
		t.Errorf("the instance got %d requests, want 3", got)
	}
	if got := c.relays(); got != 3 {
		t.Errorf("%d responses relayed in a loop, want 3", got)
	}
	for why := range handReasons {
		if got := c.handed(why); got != 0 {
			t.Errorf("%d hand-offs (reason %d): the request cost a failed attempt", got, why)
		}
	}
}

// instanceConn runs f in the loop on its instance connection in phase p,
// if there is one; false: none.
func (c *cluster) instanceConn(t *testing.T, p phase, f func(l *loop, u *fdConn)) (found bool) {
	t.Helper()
	if !c.server.loops.do(func(l *loop) {
		for _, u := range l.conns {
			if u.cc == nil && u.phase == p && !found {
				found = true
				f(l, u)
			}
		}
	}) {
		t.Fatal("the loops have stopped")
	}
	return found
}

// wakeIdly moves the loops' clock on a second and has the loop act on ev
// for the connection find picks as on an epoll event, until a wake-up
// finds nothing to do (progress, what it has pending or buffered,
// unchanged): the connection's deadline before and after that one.
func (c *cluster) wakeIdly(t *testing.T, clock *fakeClock, ev uint32, find func(l *loop) *fdConn, progress func(*fdConn) int) (before, after time.Time) {
	t.Helper()
	for range 100 {
		c.advance(t, clock, time.Second)
		found, moved := false, false
		c.server.loops.do(func(l *loop) {
			if fc := find(l); fc != nil {
				p := progress(fc)
				found, before = true, fc.deadline
				l.event(fc, ev)
				moved, after = progress(fc) != p, fc.deadline
			}
		})
		if !found {
			t.Fatal("no connection to wake")
		}
		if !moved {
			return before, after
		}
	}
	t.Fatal("every wake-up made progress")
	return
}

// inPhase finds a connection of the loop in phase p.
func inPhase(p phase) func(l *loop) *fdConn {
	return func(l *loop) *fdConn {
		for _, fc := range l.conns {
			if fc.phase == p {
				return fc
			}
		}
		return nil
	}
}

func pending(fc *fdConn) int { return len(fc.pending) }

// A wake-up for output that finds a stalled client's socket still full
// moves its write deadline no later: WriteTimeout is a bound on no
// progress, and the connection is closed WriteTimeout after the last.
func TestLoopClientWriteDeadlineOnProgress(t *testing.T) {
	clock := newFakeClock()
	c := newCluster(t, clusterOptions{n: 1, loopClock: clock.now})
	conn := stallClient(t, c, 1000)
	before, after := c.wakeIdly(t, clock, unix.EPOLLOUT, inPhase(cFlush), pending)
	if !after.Equal(before) {
		t.Fatalf("a wake-up that wrote nothing: deadline %v, was %v", after, before)
	}
	c.advance(t, clock, after.Sub(clock.now())+time.Second) // past the last progress's
	netparktest.Until(t, "the stalled connection is closed", func() bool { return c.open() == 0 })
	if _, err := io.Copy(io.Discard, conn); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading the rest: %v", err)
	}
}

// The same for a request going out to an instance that reads nothing: a
// wake-up that writes nothing leaves the deadline, and the attempt fails
// (504) WriteTimeout after its last progress.
func TestLoopInstanceWriteDeadlineOnProgress(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1) })
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	acceptAll(t, ln, func(conn net.Conn) {
		defer conn.Close()
		if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
			return
		}
		io.WriteString(conn, okAnswer)
		<-stop // reads nothing more: the next request fills its socket
	})
	t.Cleanup(func() { close(stop) })
	clock := newFakeClock()
	srv, _ := loopServer(t, ln.Addr().(*net.TCPAddr).Port, func(s *Server) { s.loopClock = clock.now })
	c := &cluster{t: t, server: srv}
	conn := dialRaw(t, c.server.Addr())
	br := bufio.NewReader(conn)
	if res, body := sendRecv(t, conn, br, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"); res.StatusCode != 200 {
		t.Fatalf("first request: %d %q", res.StatusCode, body)
	}
	// The pooled connection's send buffer as small as it goes, so that the
	// next request does not all fit.
	if !c.instanceConn(t, uIdle, func(_ *loop, u *fdConn) { _ = unix.SetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1) }) {
		t.Fatal("no pooled instance connection")
	}
	io.WriteString(conn, "GET /2 HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", 20<<10)+"\r\n\r\n")
	netparktest.Until(t, "the request waits for the instance", func() bool {
		waiting := false
		c.instanceConn(t, uWrite, func(_ *loop, u *fdConn) { waiting = len(u.pending) > 0 })
		return waiting
	})
	before, after := c.wakeIdly(t, clock, unix.EPOLLOUT, inPhase(uWrite), pending)
	if !after.Equal(before) {
		t.Fatalf("a wake-up that wrote nothing: deadline %v, was %v", after, before)
	}
	c.advance(t, clock, after.Sub(clock.now())+time.Second)
	if res := readResponse(t, conn); res.StatusCode != 504 {
		t.Fatalf("status %d, want 504", res.StatusCode)
	}
}

// A wake-up that reads nothing of a response body coming leaves its
// deadline: ResponseTimeout after the last bytes, the loop hands it to a
// goroutine, which relays the rest when it comes.
func TestLoopBodyDeadlineOnProgress(t *testing.T) {
	clock := newFakeClock()
	c := newCluster(t, clusterOptions{n: 1, loopClock: clock.now})
	ch := make(chan struct{})
	release := sync.OnceFunc(func() { close(ch) })
	t.Cleanup(release)
	c.backends["app1"].handle = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10") // not chunked: the loop reads it
		io.WriteString(w, "hello")
		w.(http.Flusher).Flush()
		<-ch
		io.WriteString(w, "world")
	}
	conn := dialRaw(t, c.server.Addr())
	io.WriteString(conn, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	netparktest.Until(t, "the loop has part of the body", func() bool { return c.instanceConn(t, uBody, func(*loop, *fdConn) {}) })
	before, after := c.wakeIdly(t, clock, unix.EPOLLIN, inPhase(uBody), func(u *fdConn) int { return u.upc.br.Buffered() })
	if !after.Equal(before) {
		t.Fatalf("a wake-up that read nothing: deadline %v, was %v", after, before)
	}
	if n := c.handed(handResponse); n != 0 {
		t.Fatalf("%d responses handed off before the deadline", n)
	}
	c.advance(t, clock, after.Sub(clock.now())+time.Second)
	netparktest.Until(t, "the response is handed to a goroutine", func() bool { return c.handed(handResponse) == 1 })
	release()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := io.ReadAll(res.Body); err != nil || res.StatusCode != 200 || string(body) != "helloworld" {
		t.Fatalf("%d %q %v, want 200 helloworld", res.StatusCode, body, err)
	}
}

// loopServer is clb before one instance on port, set as set says before
// it serves; stop ends Serve and waits for it (also done at the test's end).
func loopServer(t *testing.T, port int, set func(*Server)) (srv *Server, stop func()) {
	t.Helper()
	in := []config.Instance{{Name: "app1", Weight: 100, HTTP: config.HTTPAddr{Endpoint: config.Endpoint{
		Transport: "http", Host: "127.0.0.1", Port: port}}}}
	bal, err := balancer.New(in, loadfactor.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	srv, err = NewServer("127.0.0.1:0", Options{Balancer: bal})
	if err != nil {
		t.Fatal(err)
	}
	set(srv)
	return srv, serveTest(t, srv)
}

// metricsLine is the value of m's sample named so (a name and its labels,
// in name order); 0 for none.
func metricsLine(t *testing.T, m *metrics.Metrics, prefix string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.SplitSeq(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, prefix+" "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("metrics line %q", line)
			}
			return n
		}
	}
	return 0
}

// noFiles has the process open no more files until the returned function
// undoes it: the soft limit at the lowest free descriptor, and any below it
// freed meanwhile taken.
func noFiles(t *testing.T) (undo func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low, err := unix.Dup(0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(low)
	lim := old
	lim.Cur = uint64(low)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var held []int
	for {
		fd, err := unix.Dup(0)
		if err != nil {
			break
		}
		held = append(held, fd)
	}
	return sync.OnceFunc(func() {
		for _, fd := range held {
			unix.Close(fd)
		}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
			t.Error(err)
		}
	})
}

// A connection whose hand-off to a goroutine fails (no descriptor for Go's
// net.Conn) is closed as a failed request: counted, and its access log
// line written, like any other.
func TestLoopHandOffFailed(t *testing.T) {
	for _, tc := range []struct {
		name, req, method, path string
	}{
		{"chunked body", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "POST", "/c"},
		{"split head", "GET /s HTTP/1.1\r\nHo", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			access, lines := accessLines(t)
			m := metrics.New(nil)
			c := newCluster(t, clusterOptions{n: 1, access: access, metrics: m})
			conn := dialRaw(t, c.server.Addr())
			netparktest.Until(t, "the connection is in a loop", func() bool { return len(c.loopConns(t)) == 1 })
			undo := noFiles(t)
			t.Cleanup(undo)
			if _, err := io.WriteString(conn, tc.req); err != nil {
				t.Fatal(err)
			}
			_, err := io.ReadAll(conn)
			undo()
			if err != nil && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("the client read %v, want the connection closed", err)
			}
			expectLine(t, nextLine(t, lines), map[string]any{"method": tc.method, "path": tc.path, "outcome": "hand_off"})
			if n := metricsLine(t, m, `clb_errors_total{kind="hand_off",protocol="http"}`); n != 1 {
				t.Errorf("%d hand-off errors counted, want 1", n)
			}
			method := tc.method
			if method == "" {
				method = "other"
			}
			if n := metricsLine(t, m, `clb_requests_total{instance="none",method="`+method+`",outcome="failed",protocol="http"}`); n != 1 {
				t.Errorf("%d failed requests counted, want 1", n)
			}
			if n := c.backends["app1"].count(); n != 0 {
				t.Errorf("the instance got %d requests", n)
			}
		})
	}
}

// A loop's deadline lists stay in deadline order, linked both ways, under
// deadlines set in and out of order, moved and cleared; the loop's nearest
// is never after the first of them.
func TestLoopTimerLists(t *testing.T) {
	l := &loop{}
	conns := make([]*fdConn, 40)
	for i := range conns {
		conns[i] = &fdConn{id: uint64(i + 1)}
	}
	base := time.Unix(1000, 0)
	rnd := rand.New(rand.NewPCG(1, 2))
	for step := range 2000 {
		c := conns[rnd.IntN(len(conns))]
		k := timer(rnd.IntN(int(timers)))
		switch rnd.IntN(4) {
		case 0:
			l.clearDeadline(c)
		case 1: // mostly later than the ones before, as now+timeout is
			l.setDeadline(c, base.Add(time.Duration(step+rnd.IntN(20))*time.Millisecond), k)
		default:
			l.setDeadline(c, base.Add(time.Duration(rnd.IntN(3000))*time.Millisecond), k)
		}
		var in []uint64
		for k := range l.timers {
			list := &l.timers[k]
			var prev *fdConn
			for c := list.head; c != nil; prev, c = c, c.tnext {
				if c.tprev != prev || c.timer != list {
					t.Fatalf("step %d: list %d broken at connection %d", step, k, c.id)
				}
				if prev != nil && c.deadline.Before(prev.deadline) {
					t.Fatalf("step %d: list %d out of order at connection %d", step, k, c.id)
				}
				if !l.sweepAt.IsZero() && c.deadline.Before(l.sweepAt) || l.sweepAt.IsZero() {
					t.Fatalf("step %d: nearest %v after a deadline %v", step, l.sweepAt, c.deadline)
				}
				in = append(in, c.id)
			}
			if list.tail != prev {
				t.Fatalf("step %d: list %d's tail is not its last", step, k)
			}
		}
		n := 0
		for _, c := range conns {
			if c.timer != nil {
				n++
			} else if !c.deadline.IsZero() {
				t.Fatalf("step %d: connection %d has a deadline and no list", step, c.id)
			}
		}
		if n != len(in) {
			t.Fatalf("step %d: %d connections with a deadline, %d in the lists", step, n, len(in))
		}
	}
}

// A deadline passing has the loop look at that connection, not at every
// one it holds.
func TestLoopSweepLooksAtWhatIsDue(t *testing.T) {
	clock := newFakeClock()
	c := newCluster(t, clusterOptions{n: 1, loopClock: clock.now, linger: time.Hour})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	c.backends["app1"].handle = func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		fmt.Fprintf(w, "app1 %s", r.URL.Path)
	}
	const n = 30
	for range n { // busy: each lingers in its loop, not parked
		conn := dialRaw(t, c.server.Addr())
		br := bufio.NewReader(conn)
		roundTrip(t, conn, br)
		roundTrip(t, conn, br)
	}
	slow := dialRaw(t, c.server.Addr())
	io.WriteString(slow, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	netparktest.Until(t, "the request reaches the instance", func() bool { return c.backends["app1"].count() == 2*n+1 })
	held := 0
	c.server.loops.do(func(l *loop) { held += len(l.conns); l.swept = 0 })
	if held <= n {
		t.Fatalf("%d connections in the loops, want the %d clients lingering and more", held, n)
	}
	c.advance(t, clock, config.Defaults().HTTP.ResponseTimeout+time.Second)
	if res := readResponse(t, slow); res.StatusCode != 504 {
		t.Fatalf("status %d, want 504", res.StatusCode)
	}
	var swept int64
	c.server.loops.do(func(l *loop) { swept += l.swept })
	if swept != 1 {
		t.Errorf("the sweeps looked at %d of the %d connections, want the one due", swept, held)
	}
}

// headReady's look at the buffer's end answers as its walk line by line
// does, on heads whole, cut, with empty lines first and with bare LFs.
func TestHeadReadyFastPath(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte("\r\n\r\na: ")
	for range 200000 {
		buf := make([]byte, rnd.IntN(24))
		for i := range buf {
			buf[i] = alphabet[rnd.IntN(len(alphabet))]
		}
		for _, request := range []bool{true, false} {
			if got, want := headReady(buf, request), headReadyLines(buf, request); got != want {
				t.Fatalf("headReady(%q, %v) = %v, line by line %v", buf, request, got, want)
			}
		}
	}
}

// BenchmarkHeadReadyResponse is the loop's check that a response head is
// all read, on an instance's typical head and body.
func BenchmarkHeadReadyResponse(b *testing.B) {
	buf := []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nDate: Wed, 02 Dec 2026 18:00:00 GMT\r\nSet-Cookie: x=y\r\n\r\nhello")
	for b.Loop() {
		if !headReady(buf, false) {
			b.Fatal()
		}
	}
}
