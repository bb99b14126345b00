package httpproxy

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"clb/accesslog"
	"clb/balancer"
	"clb/certs"
	"clb/certs/certstest"
	"clb/config"
	"clb/loadfactor"
	"clb/metrics"
)

// backend is one instance: an httptest server that records what reaches it
// and says who it is.
type backend struct {
	name   string
	srv    *httptest.Server
	mu     sync.Mutex
	seen   []*http.Request // with bodies read into bodies
	bodies []string
	conns  atomic.Int32 // connections opened to it
	// handle, when set, answers instead of the default.
	handle func(w http.ResponseWriter, r *http.Request)
}

func (b *backend) requests() ([]*http.Request, []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*http.Request(nil), b.seen...), append([]string(nil), b.bodies...)
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.seen)
}

// cluster is clb's HTTP front end on loopback before httptest back ends.
type cluster struct {
	t        *testing.T
	stop     func()        // ends Serve's context
	stopped  chan struct{} // closed when Serve has returned
	bal      *balancer.Balancer
	server   *Server
	url      string
	backends map[string]*backend
	names    []string
	// With clusterOptions.https: the CA of every certificate, and clb's
	// material.
	ca    *certstest.CA
	store *certs.Store
}

type clusterOptions struct {
	n      int
	rules  []config.Rule
	limits func(*config.HTTP)
	report func(instance string, ok bool)
	logger *zap.Logger
	flood  config.Limits
	now    func() time.Time
	access *accesslog.Log
	// metrics, if set, counts.
	metrics *metrics.Metrics
	// https serves clb on a TLS listener offering h2 and http/1.1, with a
	// certificate of a test CA; client() then speaks HTTP/2.
	https bool
	// backendTLS makes the instances https:// ones, certificates of the
	// same CA (clb's instance CA).
	backendTLS bool
	// linger, if set, is how long an idle connection keeps its goroutine
	// before it is parked.
	linger time.Duration
	// noLoop serves plain HTTP with a goroutine per connection, not on the
	// event loops; loopClock is the loops' clock.
	noLoop    bool
	loopClock func() time.Time
}

func newCluster(t *testing.T, o clusterOptions) *cluster {
	t.Helper()
	c := &cluster{t: t, backends: map[string]*backend{}}
	if o.https || o.backendTLS {
		c.ca = certstest.NewCA(t, "test CA")
		c.store = certs.NewStore(c.material("clb"))
	}
	scheme := "http"
	if o.backendTLS {
		scheme = "https"
	}
	var in []config.Instance
	for i := range o.n {
		b := &backend{name: fmt.Sprintf("app%d", i+1)}
		b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			b.mu.Lock()
			b.seen = append(b.seen, r)
			b.bodies = append(b.bodies, string(body))
			handle := b.handle
			b.mu.Unlock()
			w.Header().Set("X-Served-By", b.name)
			if handle != nil {
				handle(w, r)
				return
			}
			fmt.Fprintf(w, "%s %s", b.name, r.URL.Path)
		}))
		b.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				b.conns.Add(1)
			}
		}
		if o.backendTLS {
			b.srv.TLS = c.ca.Issue(t, certstest.Leaf{Name: b.name}).ServerConfig()
			b.srv.StartTLS()
		} else {
			b.srv.Start()
		}
		t.Cleanup(b.srv.Close)
		port, _ := strconv.Atoi(b.srv.URL[strings.LastIndexByte(b.srv.URL, ':')+1:])
		c.backends[b.name], c.names = b, append(c.names, b.name)
		in = append(in, config.Instance{Name: b.name, Weight: 100, HTTP: config.HTTPAddr{Endpoint: config.Endpoint{
			Transport: scheme, Host: "127.0.0.1", Port: port}}})
	}
	bal, err := balancer.New(in, loadfactor.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	c.bal = bal
	limits := config.Defaults().HTTP
	if o.limits != nil {
		o.limits(&limits)
	}
	opts := Options{Balancer: bal, Rules: o.rules, Limits: limits, Report: o.report, Logger: o.logger,
		FloodLimits: o.flood, Now: o.now, Access: o.access, TLS: c.store, Metrics: o.metrics}
	var srv *Server
	if o.https {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv = New(tls.NewListener(ln, c.store.ServerConfig("h2", "http/1.1")), "https", opts)
		c.url = "https://" + srv.Addr()
	} else {
		var err error
		if srv, err = NewServer("127.0.0.1:0", opts); err != nil {
			t.Fatal(err)
		}
		c.url = "http://" + srv.Addr()
	}
	c.server = srv
	if o.linger > 0 {
		srv.linger = o.linger
	}
	srv.noLoop, srv.loopClock = o.noLoop, o.loopClock
	ctx, cancel := context.WithCancel(context.Background())
	c.stop, c.stopped = cancel, make(chan struct{})
	go func() {
		if err := srv.Serve(ctx); err != nil {
			t.Errorf("Serve: %v", err)
		}
		close(c.stopped)
	}()
	t.Cleanup(func() {
		cancel()
		<-c.stopped
	})
	return c
}

// client is an HTTP client of clb with its own cookie jar; with
// clusterOptions.https, it speaks HTTP/2 only.
func (c *cluster) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	if c.ca != nil && strings.HasPrefix(c.url, "https:") {
		tr := &http.Transport{TLSClientConfig: c.ca.ClientConfig(), Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP2(true)
		cl.Transport = tr
	}
	return cl
}

// dialTLS1 opens a TLS connection to clb's HTTPS listener that offers
// only http/1.1 by ALPN, closed at the test's end.
func (c *cluster) dialTLS1(t *testing.T) *tls.Conn {
	t.Helper()
	cfg := c.ca.ClientConfig()
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", c.server.Addr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// client1 is a client of clb's HTTPS listener speaking HTTP/1.1 (ALPN
// http/1.1).
func (c *cluster) client1() *http.Client {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{TLSClientConfig: c.ca.ClientConfig(), Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP1(true)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: tr}
}

// foreign is a certificate for 127.0.0.1 of a CA nobody trusts.
func (c *cluster) foreign() tls.Certificate {
	return certstest.NewCA(c.t, "foreign CA").Issue(c.t, certstest.Leaf{Name: "foreign"}).TLS
}

// material is TLS material for 127.0.0.1 signed by the cluster's CA, which
// is also its instance CA.
func (c *cluster) material(name string) *certs.Material {
	c.t.Helper()
	dir := c.t.TempDir()
	cert, key := c.ca.Issue(c.t, certstest.Leaf{Name: name}).Write(c.t, dir, name)
	m, err := certs.Load(certs.Files{Cert: cert, Key: key, InstanceCA: c.ca.WriteCA(c.t, dir, "ca")}, time.Now())
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c *cluster) get(cl *http.Client, path string, hdr ...string) *http.Response {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.url+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	res, err := cl.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// lastRequest is the last request backend name received.
func (c *cluster) lastRequest(name string) *http.Request {
	c.t.Helper()
	seen, _ := c.backends[name].requests()
	if len(seen) == 0 {
		c.t.Fatalf("%s received nothing", name)
	}
	return seen[len(seen)-1]
}

func setCookie(res *http.Response, name string) (string, bool) {
	for _, ck := range res.Cookies() {
		if ck.Name == name {
			return ck.Value, true
		}
	}
	return "", false
}

func (c *cluster) total() int {
	n := 0
	for _, b := range c.backends {
		n += b.count()
	}
	return n
}

// logWatch is a logger that signals on its channel each time a line
// containing want is written.
func logWatch(want string) (*zap.Logger, <-chan struct{}) {
	seen := make(chan struct{}, 1)
	w := zapcore.AddSync(writerFunc(func(p []byte) (int, error) {
		if strings.Contains(string(p), want) {
			select {
			case seen <- struct{}{}:
			default:
			}
		}
		return len(p), nil
	}))
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(w), zap.DebugLevel)), seen
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// dialRaw opens a TCP connection to addr, closed at the end of the test,
// with 10 s to do all its work.
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

// sendRecv writes req on conn and reads one response, body included.
func sendRecv(t *testing.T, conn net.Conn, br *bufio.Reader, req string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body) // what came of it: callers check it
	res.Body.Close()
	return res, string(body)
}

// acceptAll serves each connection ln accepts with serve, in a goroutine
// of its own, until the test ends.
func acceptAll(t *testing.T, ln net.Listener, serve func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serve(c) })
		}
	})
}

// readResponse reads one response, body included, from a connection that
// has no other response queued.
func readResponse(t *testing.T, conn net.Conn) *http.Response {
	t.Helper()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(res.Body); err != nil {
		t.Fatal(err)
	}
	return res
}

// echoWebSocket is a back end's answer to a WebSocket upgrade: 101 with the
// handshake's accept key (RFC 6455 4.2.2), then every byte echoed.
func echoWebSocket(w http.ResponseWriter, r *http.Request) {
	sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(sum[:]))
	rw.Flush()
	_, _ = io.Copy(conn, rw)
}

// serveTest serves srv until stop is called or the test ends; stop returns
// once Serve has.
func serveTest(tb testing.TB, srv *Server) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx); close(done) }()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	tb.Cleanup(stop)
	return stop
}
