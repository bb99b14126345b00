package metrics

import (
	"sync/atomic"
	"testing"
)

// TestEtcdUp: clb_etcd_up follows its function at each scrape, and is
// absent from a clb without etcd.
func TestEtcdUp(t *testing.T) {
	if _, ok := scrape(t, New(nil))["clb_etcd_up"]; ok {
		t.Error("clb_etcd_up on a clb without etcd")
	}
	m := New(nil)
	var up atomic.Bool
	m.EtcdUp(up.Load)
	for _, want := range []bool{false, true, false} {
		up.Store(want)
		f, ok := scrape(t, m)["clb_etcd_up"]
		if !ok || len(f.GetMetric()) != 1 {
			t.Fatalf("clb_etcd_up: %v", f)
		}
		if got := f.GetMetric()[0].GetGauge().GetValue(); got != map[bool]float64{true: 1, false: 0}[want] {
			t.Errorf("clb_etcd_up %v with etcd up %v", got, want)
		}
	}
}
