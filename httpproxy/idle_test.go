package httpproxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"clb/balancer"
	"clb/certs/certstest"
	"clb/config"
	"clb/loadfactor"
	"clb/netpark/netparktest"
)

// Idle connections are parked (netpark): no goroutine, no buffers, until
// they speak again.

func (c *cluster) parked() int { return c.server.park.Len() }

func (c *cluster) open() int {
	c.server.mu.Lock()
	defer c.server.mu.Unlock()
	return len(c.server.conns)
}

const getRequest = "GET /x HTTP/1.1\r\nHost: clb\r\n\r\n"

func roundTrip(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	res, body := sendRecv(t, conn, br, getRequest)
	if res.StatusCode != 200 || !strings.HasPrefix(body, "app1 /x") {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
}

func TestParkedConnectionServedAgain(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond})
	conn := dialRaw(t, c.server.Addr())
	br := bufio.NewReader(conn)
	for i := range 3 {
		roundTrip(t, conn, br)
		netparktest.Until(t, "the connection is parked", func() bool { return c.parked() == 1 })
		if i == 0 && c.backends["app1"].conns.Load() != 1 {
			t.Fatalf("%d connections to the instance", c.backends["app1"].conns.Load())
		}
	}
	if c.open() != 1 {
		t.Fatalf("%d connections in the table, want 1", c.open())
	}
}

// Requests sent as the connection is being parked (the next one right
// after a response, the rest of a head after its first bytes) are served.
func TestParkingRaces(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Microsecond})
	conn := dialRaw(t, c.server.Addr())
	br := bufio.NewReader(conn)
	for range 200 {
		roundTrip(t, conn, br)
	}
	// A head in two parts with the connection parked before the first.
	roundTrip(t, conn, br)
	netparktest.Until(t, "the connection is parked", func() bool { return c.parked() == 1 })
	io.WriteString(conn, getRequest[:5])
	netparktest.Until(t, "the connection is woken", func() bool { return c.parked() == 0 })
	io.WriteString(conn, getRequest[5:])
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("split head: %v %v", res, err)
	}
	io.Copy(io.Discard, res.Body)
	// Two requests in one write, to a parked connection.
	netparktest.Until(t, "the connection is parked", func() bool { return c.parked() == 1 })
	io.WriteString(conn, getRequest+getRequest)
	for range 2 {
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("pipelined: %v %v", res, err)
		}
		io.Copy(io.Discard, res.Body)
	}
}

func TestParkedConnectionClosedByClient(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond})
	conn := dialRaw(t, c.server.Addr())
	roundTrip(t, conn, bufio.NewReader(conn))
	netparktest.Until(t, "the connection is parked", func() bool { return c.parked() == 1 })
	conn.Close()
	netparktest.Until(t, "the connection is gone from clb's table", func() bool { return c.open() == 0 })
	// The accept loop holds one slot while it waits for the next.
	netparktest.Until(t, "only the accept loop's slot is taken", func() bool { return len(c.server.slots) == 1 })
}

func TestParkedConnectionIdleTimeout(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond,
		limits: func(l *config.HTTP) { l.IdleTimeout = 300 * time.Millisecond }})
	conn := dialRaw(t, c.server.Addr())
	br := bufio.NewReader(conn)
	roundTrip(t, conn, br)
	done := time.Now()
	netparktest.Until(t, "the connection is parked", func() bool { return c.parked() == 1 })
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read %v from an idle connection, want EOF (closed by clb)", err)
	}
	if waited := time.Since(done); waited < 300*time.Millisecond {
		t.Fatalf("closed after %v idle, before the idle timeout", waited)
	}
	netparktest.Until(t, "the connection is gone from clb's table", func() bool { return c.open() == 0 })
}

// A parked connection still counts against http.max_connections.
func TestParkedConnectionsCounted(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond,
		limits: func(l *config.HTTP) { l.MaxConnections = 2 }})
	var conns []net.Conn
	for range 2 {
		conn := dialRaw(t, c.server.Addr())
		roundTrip(t, conn, bufio.NewReader(conn))
		conns = append(conns, conn)
	}
	netparktest.Until(t, "both are parked", func() bool { return c.parked() == 2 })
	if n := len(c.server.slots); n != 2 {
		t.Fatalf("%d slots taken by 2 parked connections", n)
	}
	third := dialRaw(t, c.server.Addr()) // in the backlog: not accepted
	io.WriteString(third, getRequest)
	conns[0].Close()
	res, err := http.ReadResponse(bufio.NewReader(third), nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("third connection, once one closed: %v %v", res, err)
	}
}

func TestShutdownClosesParked(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond})
	var readers []*bufio.Reader
	for range 3 {
		conn := dialRaw(t, c.server.Addr())
		br := bufio.NewReader(conn)
		roundTrip(t, conn, br)
		readers = append(readers, br)
	}
	netparktest.Until(t, "all are parked", func() bool { return c.parked() == 3 })
	c.stop()
	select {
	case <-c.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return with parked connections")
	}
	for i, br := range readers {
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("connection %d: %v, want EOF", i, err)
		}
	}
}

// 1,000 idle connections hold no goroutine each.
func TestIdleConnectionsNoGoroutines(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond})
	warm := dialRaw(t, c.server.Addr())
	roundTrip(t, warm, bufio.NewReader(warm))
	netparktest.Until(t, "parked", func() bool { return c.parked() == 1 })
	before := runtime.NumGoroutine()
	for range 1000 {
		conn := dialRaw(t, c.server.Addr())
		roundTrip(t, conn, bufio.NewReader(conn))
	}
	netparktest.Until(t, "all parked", func() bool { return c.parked() == 1001 })
	if n := runtime.NumGoroutine(); n > before+20 {
		t.Fatalf("%d goroutines with 1,001 idle connections, %d with one", n, before)
	}
}

// HTTP/1.1 over TLS is parked too (crypto/tls holds no plaintext then).
func TestParkedTLSConnection(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, https: true, linger: time.Millisecond})
	conn := c.dialTLS1(t)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	for range 3 {
		roundTrip(t, conn, br)
		netparktest.Until(t, "the connection is parked", func() bool { return c.parked() == 1 })
	}
}

// liveHeap is the heap in use once garbage is collected (twice: sync.Pool
// keeps what it holds for one collection). (Go's poller entries, one per
// open socket, are not heap: they are reused, never returned, so a count
// of them depends on what the process did before.)
func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// holdConns opens n connections with dial, each (with speak) answered 200
// once, and returns them open.
func holdConns(t *testing.T, dial func() net.Conn, n int, speak bool) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for range n {
		conn := dial()
		if speak {
			io.WriteString(conn, getRequest)
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("%v %v", res, err)
			}
			io.Copy(io.Discard, res.Body)
		}
		conns = append(conns, conn)
	}
	return conns
}

// The heap an idle (parked) connection holds in clb, over what a bare
// accepted connection (TCP, or TLS with its handshake done) and its client
// side hold: the figure the idle memory bench multiplies by 9,000. A plain
// one is parked detached (its Go socket closed: the heap of that is not
// held, nor, outside the heap, its poller entry); a TLS one keeps its
// net.Conn. (The instance is benchBackend, which keeps nothing per
// request, unlike the cluster's recording back ends.)
func TestIdleConnectionMemory(t *testing.T) {
	netparktest.SkipUnsupported(t)
	ca := certstest.NewCA(t, "test CA")
	serverTLS := ca.Issue(t, certstest.Leaf{Name: "clb"}).ServerConfig()
	serverTLS.NextProtos = []string{"http/1.1"}
	for _, tc := range []struct {
		name string
		tls  bool
		max  float64 // bytes over the bare pair
	}{{"http", false, 512}, {"https", true, 1024}} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 1000
			listen := func() net.Listener {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				if tc.tls {
					ln = tls.NewListener(ln, serverTLS)
				}
				return ln
			}
			dialer := func(addr string) func() net.Conn {
				return func() net.Conn {
					if !tc.tls {
						return dialRaw(t, addr)
					}
					cfg := ca.ClientConfig()
					cfg.NextProtos = []string{"http/1.1"}
					conn, err := tls.Dial("tcp", addr, cfg)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { conn.Close() })
					conn.SetDeadline(time.Now().Add(10 * time.Second))
					return conn
				}
			}
			// A bare pair: accepted (and handshaken) and kept, nothing else.
			ln := listen()
			defer ln.Close()
			accepted := make(chan net.Conn, n)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					if tc, ok := c.(*tls.Conn); ok {
						_ = tc.Handshake()
					}
					accepted <- c
				}
			}()
			base := liveHeap()
			bare := holdConns(t, dialer(ln.Addr().String()), n, false)
			for range n {
				defer (<-accepted).Close()
			}
			bareBytes := float64(liveHeap()-base) / n

			in := []config.Instance{{Name: "app1", Weight: 100, HTTP: config.HTTPAddr{Endpoint: config.Endpoint{
				Transport: "http", Host: "127.0.0.1", Port: benchBackend(t)}}}}
			bal, err := balancer.New(in, loadfactor.DefaultParams())
			if err != nil {
				t.Fatal(err)
			}
			srv := New(listen(), "http", Options{Balancer: bal})
			srv.linger = time.Millisecond
			serveTest(t, srv)
			parked := func(n int) func() bool { return func() bool { return srv.park.Len() == n } }

			dial := dialer(srv.Addr())
			holdConns(t, dial, 1, true) // the instance connection, the pools' first buffers
			netparktest.Until(t, "parked", parked(1))
			base = liveHeap()
			holdConns(t, dial, n, true)
			netparktest.Until(t, "all parked", parked(n+1))
			perConn := float64(liveHeap()-base)/n - bareBytes
			t.Logf("heap per idle %s connection: %.0f B over a bare connection pair (%.0f B, both ends)", tc.name, perConn, bareBytes)
			if perConn > tc.max {
				t.Errorf("an idle connection holds %.0f B in clb over a bare pair, want at most %.0f B", perConn, tc.max)
			}
			for _, c := range bare {
				c.Close()
			}
		})
	}
}

// A connection to an instance idle in the pool holds no buffer, and is
// reused with new ones.
func TestPooledUpstreamHoldsNoBuffers(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1})
	conn := dialRaw(t, c.server.Addr())
	br := bufio.NewReader(conn)
	pooled := func() (idle, withBuffers int) {
		p := c.server.pool
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, list := range p.idle {
			for _, up := range list.conns {
				idle++
				if up.rwBuffers != nil {
					withBuffers++
				}
			}
		}
		return idle, withBuffers
	}
	for range 3 {
		roundTrip(t, conn, br)
		// The connection goes back to the pool once the response is sent.
		netparktest.Until(t, "the instance connection is pooled", func() bool { n, _ := pooled(); return n == 1 })
		if _, n := pooled(); n != 0 {
			t.Fatal("a pooled connection holds its reader and writer")
		}
	}
	if n := c.backends["app1"].conns.Load(); n != 1 {
		t.Fatalf("%d connections to the instance for 3 requests, want 1 (reused)", n)
	}
}

// A connection whose client sent one request and went quiet is parked at
// once, not after linger: a burst of such clients holds no goroutine and
// buffers each meanwhile.
func TestIdleClientParkedAtOnce(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Hour})
	conn := dialRaw(t, c.server.Addr())
	br := bufio.NewReader(conn)
	roundTrip(t, conn, br)
	netparktest.Until(t, "the connection is parked (linger is an hour)", func() bool { return c.parked() == 1 })
	// It comes back busy (this request came within linger), and is served.
	roundTrip(t, conn, br)
	roundTrip(t, conn, br)
}
