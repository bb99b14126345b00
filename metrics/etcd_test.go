package metrics

import (
	"sync/atomic"
	"testing"
)

// TestUpGauges: clb_etcd_up and clb_discovery_up follow their functions at
// each scrape, and are absent from a clb without etcd or SRV discovery.
func TestUpGauges(t *testing.T) {
	for name, register := range map[string]func(*Metrics, func() bool){
		"clb_etcd_up":      (*Metrics).EtcdUp,
		"clb_discovery_up": (*Metrics).DiscoveryUp,
	} {
		if _, ok := scrape(t, New(nil))[name]; ok {
			t.Errorf("%s on a clb without it", name)
		}
		m := New(nil)
		var up atomic.Bool
		register(m, up.Load)
		for _, want := range []bool{false, true, false} {
			up.Store(want)
			f, ok := scrape(t, m)[name]
			if !ok || len(f.GetMetric()) != 1 {
				t.Fatalf("%s: %v", name, f)
			}
			if got := f.GetMetric()[0].GetGauge().GetValue(); got != map[bool]float64{true: 1, false: 0}[want] {
				t.Errorf("%s %v with up %v", name, got, want)
			}
		}
	}
}
