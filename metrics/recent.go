package metrics

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Recent sessions: how many distinct keys a cluster was routed in the last
// minute (SPEC section 13: an operator who closed a cluster watches its
// sessions fall to 0 before upgrading it). Nothing is kept per session: the
// keys of each 10-second window go into a HyperLogLog sketch (2^12
// registers, a standard error of 1.6%; below a few thousand keys its linear
// counting is near exact, and no key counts exactly 0), and a count merges
// the last six windows.
const (
	recentWindow  = 10 * time.Second
	recentWindows = 6
	recentBits    = 12
	recentRegs    = 1 << recentBits
)

// recentKeys is one cluster's sketches, safe for concurrent use: adding is
// lock-free (an atomic load, and a compare-and-swap when a register rises);
// only the first key of a new window takes a lock, to clear the window it
// reuses.
type recentKeys struct {
	cluster string
	windows [recentWindows]recentWindowSketch
}

type recentWindowSketch struct {
	mu    sync.Mutex
	epoch atomic.Int64 // the window it counts (Unix time / recentWindow), +1 so that 0 is none
	regs  [recentRegs]atomic.Uint32
}

func windowOf(now time.Time) int64 { return now.UnixNano()/int64(recentWindow) + 1 }

// add counts key at now.
func (r *recentKeys) add(key string, now time.Time) {
	h := xxhash.Sum64String(key)
	e := windowOf(now)
	w := &r.windows[e%recentWindows]
	if w.epoch.Load() != e {
		w.mu.Lock()
		if w.epoch.Load() != e {
			for i := range w.regs {
				w.regs[i].Store(0)
			}
			w.epoch.Store(e)
		}
		w.mu.Unlock()
	}
	reg := &w.regs[h>>(64-recentBits)]
	rank := uint32(bits.LeadingZeros64(h<<recentBits|1<<(recentBits-1))) + 1
	for {
		old := reg.Load()
		if old >= rank || reg.CompareAndSwap(old, rank) {
			return
		}
	}
}

// count estimates the distinct keys added in the minute up to now.
func (r *recentKeys) count(now time.Time) int {
	e := windowOf(now)
	var merged [recentRegs]uint32
	for i := range r.windows {
		w := &r.windows[i]
		if we := w.epoch.Load(); we <= e-recentWindows || we > e {
			continue
		}
		for j := range merged {
			merged[j] = max(merged[j], w.regs[j].Load())
		}
	}
	sum, zeros := 0.0, 0
	for _, v := range merged {
		sum += math.Ldexp(1, -int(v))
		if v == 0 {
			zeros++
		}
	}
	const m = float64(recentRegs)
	estimate := 0.7213 / (1 + 1.079/m) * m * m / sum
	if estimate <= 2.5*m && zeros > 0 {
		estimate = m * math.Log(m/float64(zeros)) // linear counting
	}
	return int(math.Round(estimate))
}
