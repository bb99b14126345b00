package balancer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"clb/config"
	"clb/hashing"
	"clb/loadfactor"
)

// TestWhatIfMatchesTheRealChange computes a what-if, then applies the change
// to the Balancer (Update) and routes 100,000 random keys before and after:
// every key that really moves does so along a cell of the what-if's matrix,
// each cell's share and each instance's share after the change are the
// what-if's within sampling error, and a removal sends every moved key to
// its old replica partner, an addition takes keys only for itself with the
// old owner as the new replica partner. N = 3, 10, 100, random weights, with
// an instance down and (for removals) one ramping.
func TestWhatIfMatchesTheRealChange(t *testing.T) {
	p := loadfactor.Params{Start: 0.2, Increase: 0.2, Period: time.Minute}
	now := epoch()
	later := now.Add(time.Hour) // every ramp an Update starts at now has ended
	for _, n := range []int{3, 10, 100} {
		for _, op := range []string{"remove", "add", "reweigh"} {
			if op == "reweigh" && n != 10 {
				continue // the slowest case (a build), once
			}
			t.Run(fmt.Sprintf("N=%d/%s", n, op), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(n), 15))
				in := randomInstances(r, n)
				b := mustBalancer(t, in, p)
				must(t, b.SetHealth(in[0].Name, false, now.Add(-time.Hour)))
				at := later
				var c Change
				after := slices.Clone(in)
				switch op {
				case "remove":
					if n >= 10 {
						// A ramping instance: compared at now, where the
						// Update leaves its ramp as it is.
						must(t, b.SetHealth(in[2].Name, false, now.Add(-time.Hour)))
						must(t, b.SetHealth(in[2].Name, true, now.Add(-90*time.Second)))
						at = now
					}
					c.Remove = []string{in[1].Name}
					after = slices.Delete(after, 1, 2)
				case "add":
					c.Add = []hashing.Instance{{Name: "new-one", Weight: 1 + r.IntN(1000)}}
					after = append(after, config.Instance{Name: "new-one", Weight: c.Add[0].Weight})
				case "reweigh":
					c.Remove = []string{in[1].Name}
					c.Add = []hashing.Instance{{Name: in[1].Name, Weight: in[1].Weight * 3}}
					after[1].Weight *= 3
				}
				e, err := b.Table().WhatIf(c, now)
				if err != nil {
					t.Fatal(err)
				}
				if e.Keys != 1<<hashing.DefaultSlotBits {
					t.Errorf("compared %d keys, want one per slot", e.Keys)
				}
				cells := map[[2]string]float64{}
				for _, f := range e.Flows {
					cells[[2]string{f.From, f.To}] = f.Share
				}

				const keys = 100_000
				hs := randomHashes(b.Table(), r, keys)
				before := make([]Decision, keys)
				for k, h := range hs {
					before[k] = b.Table().RouteHash(h, "", at)
				}
				must(t, b.Update(after, p, now))
				moved, flows, shares := 0, map[[2]string]int{}, map[string]int{}
				for k, h := range hs {
					d := b.Table().RouteHash(h, "", at)
					shares[name(d.Owner)]++
					was := before[k]
					if name(was.Owner) == name(d.Owner) {
						continue
					}
					moved++
					cell := [2]string{name(was.Owner), name(d.Owner)}
					flows[cell]++
					if cells[cell] == 0 {
						t.Fatalf("a key moves %s → %s, a cell the what-if has empty", cell[0], cell[1])
					}
					switch op {
					case "remove":
						if name(d.Owner) != name(was.Replica) {
							t.Fatalf("a key of %s moves to %s, not to its replica partner %s", cell[0], cell[1], name(was.Replica))
						}
					case "add":
						if name(d.Owner) != "new-one" || name(d.Replica) != name(was.Owner) {
							t.Fatalf("a key moves %s → %s with replica partner %s", cell[0], cell[1], name(d.Replica))
						}
					}
				}
				near(t, "moved", float64(moved)/keys, e.Moved)
				for _, f := range e.Flows {
					near(t, f.From+" → "+f.To, float64(flows[[2]string{f.From, f.To}])/keys, f.Share)
				}
				for _, s := range e.Shares {
					near(t, "share of "+s.Name, float64(shares[s.Name])/keys, s.After)
				}
				switch op {
				case "remove":
					if e.ToReplica != e.Moved || e.Unsafe != 0 {
						t.Errorf("removal: %v moved, %v to the replica partner, %v unsafe", e.Moved, e.ToReplica, e.Unsafe)
					}
				case "add":
					if e.ToNewPartner != e.Moved || e.Unsafe != 0 {
						t.Errorf("addition: %v moved, %v to a new partner, %v unsafe", e.Moved, e.ToNewPartner, e.Unsafe)
					}
				}
				if e.Moved == 0 {
					t.Error("nothing moves")
				}
			})
		}
	}
}

// near fails unless a share measured over 100,000 keys is within 5 standard
// deviations of the what-if's (plus the slots' own rounding).
func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if tol := 5*math.Sqrt(want*(1-want)/100_000) + 1e-4; math.Abs(got-want) > tol {
		t.Errorf("%s: %.5f of the keys, the what-if says %.5f (±%.5f)", what, got, want, tol)
	}
}

// TestDrainsAreEachRemoval: the one-pass what-if of draining every instance
// is, instance by instance, exactly the what-if of removing it, with
// instances up, ramping, draining, down and of weight 0.
func TestDrainsAreEachRemoval(t *testing.T) {
	now := epoch()
	p := loadfactor.Params{Start: 0.2, Increase: 0.2, Period: time.Minute}
	in := instances(6, 100, 200, 50, 100, 0, 100)
	b := mustBalancer(t, in, p)
	must(t, b.SetHealth("inst0", false, now.Add(-time.Hour)))
	must(t, b.SetHealth("inst1", false, now.Add(-time.Hour)))
	must(t, b.SetHealth("inst1", true, now.Add(-time.Minute)))
	must(t, b.Drain("inst2", now.Add(-2*time.Minute)))
	tb := b.Table()
	drains := tb.Drains(now)
	if len(drains) != len(in) {
		t.Fatalf("%d drains for %d instances", len(drains), len(in))
	}
	for k, d := range drains {
		if d.Name != in[k].Name {
			t.Fatalf("drain %d is %s, want %s", k, d.Name, in[k].Name)
		}
		e, err := tb.WhatIf(Change{Remove: []string{d.Name}}, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Shares) == 0 {
			t.Errorf("%s: no shares", d.Name)
		}
		e.Shares = nil // a drain's are the shares now and its flows
		if !reflect.DeepEqual(d.Effect, e) {
			t.Errorf("%s: drain\n%+v\nremoval\n%+v", d.Name, d.Effect, e)
		}
		if e.Unsafe != 0 || e.ToReplica != e.Moved {
			t.Errorf("%s: %+v", d.Name, e)
		}
	}
	if drains[3].Moved == 0 || drains[0].Moved != 0 || drains[4].Moved != 0 {
		t.Errorf("moved: up %v, down %v, weight 0 %v", drains[3].Moved, drains[0].Moved, drains[4].Moved)
	}
}

// TestWhatIfChangesNothing: the table, its version and routing are as they
// were, and a refused change says why.
func TestWhatIfChangesNothing(t *testing.T) {
	now := epoch()
	b := mustBalancer(t, instances(4), loadfactor.DefaultParams())
	tb := b.Table()
	if _, err := tb.WhatIf(Change{Remove: []string{"inst1"}, Add: []hashing.Instance{{Name: "x", Weight: 100}}}, now); err != nil {
		t.Fatal(err)
	}
	if b.Table() != tb || tb.Version() != 1 {
		t.Fatal("a what-if published a table")
	}
	for k := range 1000 {
		key := fmt.Sprint(k)
		if name(tb.Route(key, "", now).Owner) != tb.PreferenceList(nil, key, 1)[0] {
			t.Fatalf("%s: routing changed", key)
		}
	}
	// Removing the last live instance: every key is left without an owner.
	last := mustBalancer(t, instances(2), loadfactor.DefaultParams())
	must(t, last.SetHealth("inst0", false, now))
	e, err := last.Table().WhatIf(Change{Remove: []string{"inst1"}}, now)
	if err != nil || e.Moved != 1 || e.Unsafe != 1 || len(e.Flows) != 1 || e.Flows[0] != (Flow{From: "inst1", To: "", Share: 1}) {
		t.Errorf("removing the last live instance: %+v %v", e, err)
	}
	for _, tc := range []struct {
		name   string
		change Change
		want   error
	}{
		{name: "unknown", change: Change{Remove: []string{"nope"}}, want: ErrUnknownInstance},
		{name: "configured", change: Change{Add: []hashing.Instance{{Name: "inst1", Weight: 1}}}, want: ErrBadChange},
		{name: "twice", change: Change{Add: []hashing.Instance{{Name: "y", Weight: 1}, {Name: "y", Weight: 2}}}, want: ErrBadChange},
		{name: "negative", change: Change{Add: []hashing.Instance{{Name: "y", Weight: -1}}}, want: ErrBadChange},
	} {
		if _, err := tb.WhatIf(tc.change, now); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// BenchmarkWhatIf is one what-if at N instances: removing one (two routes a
// slot), adding one (a hashing table to build, then the same), and the
// drain of every instance at once (one pass).
func BenchmarkWhatIf(b *testing.B) {
	now := time.Now()
	for _, n := range []int{3, 100, 1000} {
		tb := mustBalancer(b, benchInstances(n), loadfactor.DefaultParams()).Table()
		remove := Change{Remove: []string{tb.hash.Name(0)}}
		add := Change{Add: []hashing.Instance{{Name: "added", Weight: 100}}}
		b.Run(fmt.Sprintf("N=%d/remove", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := tb.WhatIf(remove, now); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("N=%d/add", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := tb.WhatIf(add, now); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("N=%d/drains", n), func(b *testing.B) {
			for b.Loop() {
				tb.Drains(now)
			}
		})
	}
}
