package metrics

import (
	"fmt"
	"testing"
	"time"
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
