package balancer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"clb/config"
	"clb/loadfactor"
)

// benchKeys are SIP-like default keys (from-tag + call-id), many enough that
// their slots miss the CPU caches as live traffic does. They are substrings of
// one string, as keys parsed out of consecutive packets would be: a loop over
// keys scattered by the allocator would measure the allocator's layout.
func benchKeys(n int) []string {
	r := rand.New(rand.NewPCG(7, 7))
	var sb strings.Builder
	ends := make([]int, n)
	for i := range ends {
		fmt.Fprintf(&sb, "%08x%016x@10.0.%d.%d", r.Uint32(), r.Uint64(), r.IntN(256), r.IntN(256))
		ends[i] = sb.Len()
	}
	all, keys, start := sb.String(), make([]string, n), 0
	for i, end := range ends {
		keys[i], start = all[start:end], end
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
// admission applied: one instance in ten is down and one is ramping. Keys are
// drawn from 65,536 sessions, whose slots do not all stay in the caches; the
// hot variant draws from 4,096, whose slots do.
func BenchmarkRoute(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	for _, sessions := range []int{1 << 16, 1 << 12} {
		keys := benchKeys(sessions)
		for _, n := range []int{10, 100, 1000} {
			name := fmt.Sprintf("N=%d", n)
			if sessions < 1<<16 {
				name = fmt.Sprintf("hot/N=%d", n)
			}
			b.Run(name, func(b *testing.B) {
				bal := degraded(b, n, now)
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					d := bal.Route(keys[i&(sessions-1)], "", now)
					if d.Owner == nil || d.Replica == nil {
						b.Fatal("no owner or replica")
					}
				}
			})
		}
	}
}

// BenchmarkRouteLatency is BenchmarkRoute's hot set with each key chosen by
// the previous decision, so that one route cannot overlap the next: the
// latency a proxy pays between parsing a message and forwarding it.
func BenchmarkRouteLatency(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	const sessions = 1 << 12
	keys := benchKeys(sessions)
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			bal := degraded(b, n, now)
			b.ReportAllocs()
			next := 0
			for i := 0; b.Loop(); i++ {
				d := bal.Route(keys[next], "", now)
				next = (next*31 + len(d.Owner.Name) + len(d.Replica.Name) + i) & (sessions - 1)
			}
		})
	}
}

// degraded is a balancer of n instances where one in ten is down and one is
// ramping.
func degraded(b testing.TB, n int, now time.Time) *Balancer {
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
	return bal
}

// BenchmarkStateChange is the rebuild after an instance changes state at
// N = 1000: a new Table is built and published (the hashing table is kept).
func BenchmarkStateChange(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	bal := degraded(b, 1000, now)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := bal.SetHealth("inst5", i%2 == 1, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReconfigure is the rebuild when the instances change (one added)
// at N = 1000: the hashing table is built anew.
func BenchmarkReconfigure(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	in := benchInstances(1000)
	bal := degraded(b, 1000, now)
	more := append(slices.Clone(in), config.Instance{Name: "extra", Weight: 100})
	for i := 0; b.Loop(); i++ {
		next := in
		if i%2 == 0 {
			next = more
		}
		if err := bal.Update(next, loadfactor.DefaultParams(), now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStatus is one Table.Status at N = 1000, as every status call,
// long poll and metrics scrape makes.
func BenchmarkStatus(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	tb := degraded(b, 1000, now).Table()
	b.ReportAllocs()
	for b.Loop() {
		_ = tb.Status(now)
	}
}
