package metrics

import "testing"

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
