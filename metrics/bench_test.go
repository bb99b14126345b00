package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
)

// BenchmarkRequest: counting a request of a label set already seen, and
// its session, as the HTTP path does per request; from every core at once.
func BenchmarkRequest(b *testing.B) {
	m := New(nil)
	method := []byte("GET")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Request("http", Method(method), "app2", "2xx")
			m.Session("http", "app2")
		}
	})
}

// BenchmarkRouted: counting a routed key in its cluster's sketch, as every
// request does, for one of 10,000 keys.
func BenchmarkRouted(b *testing.B) {
	m := New(nil)
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = fmt.Sprint("session", i)
	}
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m.Routed("default", keys[i%len(keys)], now)
	}
}

// BenchmarkScrape: one /metrics scrape of a clb with three instances and
// traffic counted, as text and gzipped.
func BenchmarkScrape(b *testing.B) {
	var ins []config.Instance
	for _, n := range []string{"app1", "app2", "app3"} {
		ins = append(ins, config.Instance{Name: n, Weight: 100})
	}
	bal, err := balancer.New(ins, loadfactor.DefaultParams())
	if err != nil {
		b.Fatal(err)
	}
	m := New(func() *balancer.Balancer { return bal })
	for _, n := range []string{"app1", "app2", "app3"} {
		m.Request("http", "GET", n, "2xx")
		m.Request("sip", "INVITE", n, "forwarded")
		m.Probe(n, "http", true, time.Millisecond)
	}
	h := m.Handler()
	for _, enc := range []string{"", "gzip"} {
		b.Run("encoding="+enc, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/metrics", nil)
			if enc != "" {
				req.Header.Set("Accept-Encoding", enc)
			}
			b.ReportAllocs()
			for b.Loop() {
				w := discardResponse{header: http.Header{}}
				h.ServeHTTP(&w, req)
			}
		})
	}
}

// discardResponse is an http.ResponseWriter that keeps nothing of the body.
type discardResponse struct{ header http.Header }

func (d *discardResponse) Header() http.Header         { return d.header }
func (d *discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardResponse) WriteHeader(int)             {}
