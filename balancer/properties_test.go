package balancer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"clb/config"
	"clb/loadfactor"
)

func randomInstances(r *rand.Rand, n int) []config.Instance {
	in := make([]config.Instance, n)
	for i := range in {
		in[i] = config.Instance{Name: fmt.Sprintf("app-%d-%x", i, r.Uint32()), Weight: 1 + r.IntN(1000)}
	}
	return in
}

func randomHashes(t *Table, r *rand.Rand, n int) []uint64 {
	hs := make([]uint64, n)
	for i := range hs {
		hs[i] = t.Hash(fmt.Sprintf("%x@%d;tag=%x", r.Uint64(), r.IntN(1000), r.Uint32()))
	}
	return hs
}

// candidateHashes are n key hashes whose first live instance is i: random
// low bits under the slots where i comes first, which is how a random key
// of i's falls. They let the ramp be measured on 100,000 keys of one instance
// at N = 1000 without hashing 10^8 keys.
func candidateHashes(t *Table, r *rand.Rand, i int, n int, live func(int) bool) []uint64 {
	var slots []uint64
	shift := 64 - uint(math.Log2(float64(t.hash.Slots())))
	for s := range uint64(t.hash.Slots()) {
		if t.hash.First(s<<shift, live) == i {
			slots = append(slots, s)
		}
	}
	hs := make([]uint64, n)
	for k := range hs {
		hs[k] = slots[r.IntN(len(slots))]<<shift | r.Uint64()>>(64-shift)
	}
	return hs
}

// TestRampMovesKeysOnlyToTheRampingInstance: N = 3, 10, 100, 1000 with random
// weights. One instance returns with start 0 and gains 0.1 a period. At every
// step, keys move only to it, the moved keys' replica partner is their old
// owner, and the share of its keys it admits is f within 0.01. Draining is the
// mirror image.
func TestRampMovesKeysOnlyToTheRampingInstance(t *testing.T) {
	p := loadfactor.Params{Start: 0, Increase: 0.1, Period: time.Second}
	for _, n := range []int{3, 10, 100, 1000} {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(n), 8))
			in := randomInstances(r, n)
			b := mustBalancer(t, in, p)
			a := in[n/2].Name
			ai, _ := b.Table().hash.Index(a)
			all := func(int) bool { return true }
			mine := candidateHashes(b.Table(), r, ai, 100_000, all)
			hs := append(randomHashes(b.Table(), r, 100_000), mine...)

			t0 := epoch()
			must(t, b.SetHealth(a, false, t0))
			must(t, b.SetHealth(a, true, t0))
			tb := b.Table()
			steps := []time.Time{}
			for k := range 11 {
				steps = append(steps, t0.Add(time.Duration(k)*time.Second))
			}
			checkRamp(t, tb, hs, mine, a, steps, true)

			// Drain from 1: 0.9 at once, then 0.1 less every period.
			b.Tick(steps[10])
			t1 := steps[10].Add(time.Hour)
			before := b.Table()
			must(t, b.Drain(a, t1))
			drained := b.Table()
			for _, h := range hs { // the first slice moves at once
				d0, d1 := before.RouteHash(h, "", t1), drained.RouteHash(h, "", t1)
				if d0.Owner != d1.Owner && (name(d0.Owner) != a || d1.Owner != d0.Replica) {
					t.Fatalf("drain start: %#x moved %s → %s (replica %s)", h, name(d0.Owner), name(d1.Owner), name(d0.Replica))
				}
			}
			steps = steps[:0]
			for k := range 10 {
				steps = append(steps, t1.Add(time.Duration(k)*time.Second))
			}
			checkRamp(t, drained, hs, mine, a, steps, false)
		})
	}
}

// checkRamp routes hs at each step; ramping instance a's factor rises (up) or
// falls between steps.
func checkRamp(t *testing.T, tb *Table, hs, mine []uint64, a string, steps []time.Time, up bool) {
	t.Helper()
	prev := make([]Decision, len(hs))
	for k, now := range steps {
		f := factorOf(tb, a, now)
		admitted := 0
		for j, h := range hs {
			d := tb.RouteHash(h, "", now)
			if k > 0 && d.Owner != prev[j].Owner {
				old := prev[j]
				switch {
				case up && name(d.Owner) != a:
					t.Fatalf("f=%.1f: %#x moved %s → %s, not to the ramping %s", f, h, name(old.Owner), name(d.Owner), a)
				case up && d.Replica != old.Owner:
					t.Fatalf("f=%.1f: %#x moved to %s with replica %s, not its old owner %s", f, h, a, name(d.Replica), name(old.Owner))
				case !up && name(old.Owner) != a:
					t.Fatalf("f=%.1f: %#x moved %s → %s while only %s drained", f, h, name(old.Owner), name(d.Owner), a)
				case !up && d.Owner != old.Replica:
					t.Fatalf("f=%.1f: %#x left %s for %s, not its replica partner %s", f, h, a, name(d.Owner), name(old.Replica))
				}
			}
			prev[j] = d
			if j >= len(hs)-len(mine) && name(d.Owner) == a {
				admitted++
			}
		}
		share := float64(admitted) / float64(len(mine))
		if math.Abs(share-f) > 0.01 {
			t.Errorf("f=%.2f: %s admits %.4f of its keys", f, a, share)
		}
	}
}

func factorOf(tb *Table, n string, now time.Time) float64 {
	for _, s := range tb.Status(now) {
		if s.Instance.Name == n {
			return s.Factor
		}
	}
	return -1
}

// TestFailoverInvariant drives random single changes (an instance fails,
// returns, is disabled, enabled, drained, removed or added, or one ramp
// advances a step) and checks SPEC section 1 for every key after each: the new
// owner is the old owner, the old replica partner, or an instance whose
// replica partner is the old owner.
func TestFailoverInvariant(t *testing.T) {
	for _, n := range []int{3, 10, 100} {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(n), 9))
			in := randomInstances(r, n)
			p := loadfactor.Params{Start: 0.1, Increase: 0.2, Period: time.Minute}
			b := mustBalancer(t, in, p)
			hs := randomHashes(b.Table(), r, 20_000)
			now := epoch()
			names := func() []string {
				var out []string
				for _, s := range b.Table().Status(now) {
					out = append(out, s.Instance.Name)
				}
				return out
			}
			counts := map[string]int{}
			for step := range 60 {
				// Distinct instants, so that no two ramps start together;
				// before and after a change are compared at one instant.
				now = now.Add(time.Duration(1+r.IntN(1000)) * time.Millisecond)
				before, then := b.Table(), now
				all := names()
				pick := all[r.IntN(len(all))]
				var op string
				switch c := r.IntN(8); {
				case c == 0:
					op = "fail"
					must(t, b.SetHealth(pick, false, now))
				case c == 1:
					op = "return"
					must(t, b.SetHealth(pick, true, now))
				case c == 2:
					op = "disable"
					must(t, b.Disable(pick, now))
				case c == 3:
					op = "enable"
					must(t, b.Enable(pick, now))
				case c == 4:
					op = "drain"
					must(t, b.Drain(pick, now))
				case c == 5 && len(all) > 2:
					op = "remove"
					cfg := slices.DeleteFunc(slices.Clone(configOf(b)), func(i config.Instance) bool { return i.Name == pick })
					must(t, b.Update(cfg, p, now))
				case c == 6:
					op = "add"
					cfg := slices.Insert(slices.Clone(configOf(b)), r.IntN(len(all)), config.Instance{Name: fmt.Sprintf("new%d", step), Weight: 1 + r.IntN(1000)})
					must(t, b.Update(cfg, p, now))
				default:
					op = "ramp step"
					next, ok := nextRampStep(b.Table(), now)
					if !ok {
						continue
					}
					now = next
				}
				counts[op]++
				after := b.Table()
				for _, h := range hs {
					d0, d1 := before.RouteHash(h, "", then), after.RouteHash(h, "", now)
					if !safeMove(d0, d1) {
						t.Fatalf("step %d (%s %s): %#x owner %s (replica %s) → %s (replica %s)",
							step, op, pick, h, name(d0.Owner), name(d0.Replica), name(d1.Owner), name(d1.Replica))
					}
				}
			}
			t.Logf("changes: %v", counts)
		})
	}
}

// safeMove is SPEC section 1's invariant for one key.
func safeMove(before, after Decision) bool {
	switch {
	case before.Owner == nil || after.Owner == nil:
		return true // nobody held or takes the key
	case name(after.Owner) == name(before.Owner):
		return true
	case name(after.Owner) == name(before.Replica):
		return true
	}
	return name(after.Replica) == name(before.Owner)
}

func configOf(b *Balancer) []config.Instance {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.instances
}

// nextRampStep is the next instant at which exactly one ramp steps.
func nextRampStep(tb *Table, now time.Time) (time.Time, bool) {
	var next time.Time
	alone := false
	for _, m := range tb.members {
		at, ok := m.ramp.NextChange(now)
		switch {
		case !ok || m.state == Down || m.state == Disabled:
		case next.IsZero() || at.Before(next):
			next, alone = at, true
		case at.Equal(next):
			alone = false
		}
	}
	return next, alone
}
