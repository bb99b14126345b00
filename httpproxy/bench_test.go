package httpproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"clb/accesslog"
	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
	"clb/metrics"
)

// benchAnswer is the back end's answer to every request of the benchmarks.
const benchAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

// benchBackend answers every request head on every connection with
// benchAnswer, allocating nothing per request, so that the benchmark's
// allocations are clb's.
func benchBackend(b testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	answer := []byte(benchAnswer)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if len(line) == 2 {
						if _, err := c.Write(answer); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// BenchmarkRequest is one keep-alive GET through clb to an instance and
// back, on loopback, with the access log off and on (JSON to a discarding
// writer; every key, then one in a hundred), and with metrics counted.
func BenchmarkRequest(b *testing.B) {
	for _, c := range []struct {
		name    string
		on      bool
		sample  float64
		metrics bool
	}{{"access=off", false, 1, false}, {"access=on", true, 1, false}, {"access=on,sample=0.01", true, 0.01, false}, {"access=off,metrics=on", false, 1, true}} {
		b.Run(c.name, func(b *testing.B) {
			get := requestProxy(b, c.on, c.sample, c.metrics)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				get(i)
			}
		})
	}
}

// requestProxy is clb in front of one benchBackend, with the access log on
// or off (JSON to a discarding writer, sampled) and metrics counted or not,
// and get(i), a keep-alive GET of session i%1024 through it. The client side
// allocates nothing per request: what a run allocates is clb's.
func requestProxy(tb testing.TB, accessOn bool, sample float64, withMetrics bool) (get func(i int)) {
	port := benchBackend(tb)
	in := []config.Instance{{Name: "app1", Weight: 100, HTTP: config.HTTPAddr{Endpoint: config.Endpoint{
		Transport: "http", Host: "127.0.0.1", Port: port}}}}
	bal, err := balancer.New(in, loadfactor.DefaultParams())
	if err != nil {
		tb.Fatal(err)
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))
	access := accesslog.New(log)
	access.Set(accessOn, sample)
	var m *metrics.Metrics
	if withMetrics {
		m = metrics.New(func() *balancer.Balancer { return bal })
	}
	srv, err := NewServer("127.0.0.1:0", Options{Balancer: bal, Access: access, Metrics: m})
	if err != nil {
		tb.Fatal(err)
	}
	serveTest(tb, srv)

	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	br := bufio.NewReader(conn)
	reqs := make([][]byte, 1024)
	for i := range reqs {
		reqs[i] = fmt.Appendf(nil, "GET /item/%d?x=1 HTTP/1.1\r\nHost: bench\r\nCookie: CLBKEY=user%d\r\n\r\n", i, i)
	}
	body := make([]byte, 5)
	return func(i int) {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // a hung proxy fails the run
		if _, err := conn.Write(reqs[i%len(reqs)]); err != nil {
			tb.Fatal(err)
		}
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				tb.Fatal(err)
			}
			if len(line) == 2 {
				break
			}
			if bytes.HasPrefix(line, []byte("HTTP/1.1 ")) && !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
				tb.Fatalf("%q", line)
			}
		}
		if _, err := io.ReadFull(br, body); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkHead is the in-memory work clb does on one request's heads, with
// no I/O: a browser's request head parsed, framed, checked and rebuilt for
// the instance, and the instance's response head parsed and rebuilt for
// the client.
func BenchmarkHead(b *testing.B) {
	const req = "GET /app/items/42?view=full HTTP/1.1\r\nHost: shop.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
		"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
		"Accept-Language: en-GB,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Cookie: CLBKEY=user%3Aalice; CLBROUTE=app1; theme=dark\r\nConnection: keep-alive\r\n\r\n"
	const res = "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 5120\r\n" +
		"Cache-Control: private, max-age=0\r\nDate: Tue, 01 Dec 2026 12:00:00 GMT\r\nVary: Accept-Encoding\r\n\r\n"
	owner := &config.Instance{Name: "app1", HTTP: config.HTTPAddr{Endpoint: config.Endpoint{Transport: "http", Host: "127.0.0.1", Port: 8081}}}
	s := &Server{scheme: "http", via: newVia()}
	cc := &clientConn{remote: "192.0.2.7", connState: &connState{}}
	reqb, resb := []byte(req), []byte(res)
	rr, rs := bytes.NewReader(nil), bytes.NewReader(nil)
	br, brs := bufio.NewReaderSize(rr, 4096), bufio.NewReaderSize(rs, 4096)
	b.ReportAllocs()
	for b.Loop() {
		rr.Reset(reqb)
		br.Reset(rr)
		if err := readHead(br, &cc.req, 32<<10, 100, true); err != nil {
			b.Fatal(err)
		}
		f, err := cc.req.requestFraming()
		if err != nil || cc.req.checkTarget() != nil || s.looped(&cc.req) {
			b.Fatal(err)
		}
		x := exchange{s: s, cc: cc, h: &cc.req, f: f, session: &cc.ss}
		x.key.key, x.last = "user:alice", "app1"
		x.d.Owner = owner
		cc.out = x.appendRequestHead(cc.out[:0])
		rs.Reset(resb)
		brs.Reset(rs)
		if err := readHead(brs, &cc.res, 64<<10, 200, false); err != nil {
			b.Fatal(err)
		}
		rf, err := cc.res.responseFraming(cc.req.method)
		if err != nil {
			b.Fatal(err)
		}
		cc.out = x.appendResponseHead(cc.out[:0], false, rf)
	}
}

// BenchmarkPoolPopPut is an idle instance connection taken from the pool
// and put back, with its buffers, as a loop does per request: three
// instances, twenty connections each.
func BenchmarkPoolPopPut(b *testing.B) {
	p := newPool(time.Second, time.Minute, 64)
	var ks []poolKey
	for i := range 3 {
		ks = append(ks, poolKey{e: config.Endpoint{Transport: "http", Host: "127.0.0.1", Port: 18081 + i}, loop: 1})
	}
	now := time.Now()
	for _, k := range ks {
		for range 20 {
			c := &upConn{addr: k}
			b := newRWBuffers(16, 16)
			c.rwBuffers = &b
			p.put(c, now)
		}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c := p.popAlive(ks[i%3], now, false)
		p.put(c, now)
	}
}

// TestRequestAllocations: a keep-alive request through the event loop, key
// from its CLBKEY cookie, allocates nothing in clb, with metrics counted and
// with the access log on (its key and CLBROUTE point into the head).
func TestRequestAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, c := range []struct {
		name     string
		accessOn bool
	}{{"access=off", false}, {"access=on", true}} {
		t.Run(c.name, func(t *testing.T) {
			get := requestProxy(t, c.accessOn, 1, true)
			i := 0
			for ; i < 2048; i++ { // every session once: the pool, buffers and sketches grown
				get(i)
			}
			if allocs := testing.AllocsPerRun(1000, func() { get(i); i++ }); allocs > 0 {
				t.Errorf("%v allocations a request, want 0", allocs)
			}
		})
	}
}
