package balancer

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"clb/config"
	"clb/loadfactor"
)

// benchKeys are SIP-like default keys (from-tag + call-id), many enough that
// lookups miss the CPU caches as live traffic does.
func benchKeys(n int) []string {
	r := rand.New(rand.NewPCG(7, 7))
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%08x%016x@10.0.%d.%d", r.Uint32(), r.Uint64(), r.IntN(256), r.IntN(256))
	}
	return keys
}

func benchInstances(n int) []config.Instance {
	in := make([]config.Instance, n)
	for i := range in {
		in[i] = config.Instance{Name: fmt.Sprintf("inst%d", i), Weight: 100}
	}
	return in
}

// BenchmarkRoute routes to owner and replica partner with liveness and
// admission applied: one instance in ten is down and one is ramping.
func BenchmarkRoute(b *testing.B) {
	keys := benchKeys(1 << 16)
	now := time.Unix(1_000_000, 0)
	for _, n := range []int{10, 100, 1000} {
		bal, err := New(benchInstances(n), loadfactor.DefaultParams())
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < n; i += 10 {
			if err := bal.SetHealth(fmt.Sprintf("inst%d", i), false, now); err != nil {
				b.Fatal(err)
			}
		}
		if err := bal.SetHealth("inst0", true, now.Add(-30*time.Second)); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				d := bal.Route(keys[i&(1<<16-1)], "", now)
				if d.Owner == nil || d.Replica == nil {
					b.Fatal("no owner or replica")
				}
			}
		})
	}
}
