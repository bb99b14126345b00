package balancer

import (
	"testing"
	"time"

	"clb/config"
	"clb/loadfactor"
)

// TestRampFrom: two balancers that learn of an instance at different
// moments, each ramping it from the moment it registered, give it the same
// load factor at every moment after; one whose ramp is over is up; a
// draining instance keeps its drain.
func TestRampFrom(t *testing.T) {
	params := loadfactor.Params{Start: 0.25, Increase: 0.25, Period: time.Second}
	base := []config.Instance{{Name: "a", Weight: 100}, {Name: "b", Weight: 100}}
	added := append(base[:2:2], config.Instance{Name: "c", Weight: 100})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var bals [2]*Balancer
	for i, learnt := range []time.Time{t0.Add(100 * time.Millisecond), t0.Add(1900 * time.Millisecond)} {
		b, err := New(base, params)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Update(added, params, learnt); err != nil {
			t.Fatal(err)
		}
		if err := b.RampFrom("c", t0, learnt); err != nil {
			t.Fatal(err)
		}
		bals[i] = b
	}
	for _, at := range []time.Duration{1900 * time.Millisecond, 2 * time.Second, 2500 * time.Millisecond, 3 * time.Second} {
		now := t0.Add(at)
		var f [2]float64
		for i, b := range bals {
			for _, st := range b.Table().Status(now) {
				if st.Instance.Name == "c" {
					f[i] = st.Factor
				}
			}
		}
		want := min(1, 0.25+0.25*float64(at/time.Second))
		if f[0] != want || f[1] != want {
			t.Errorf("at t0+%v: load factors %v, want both %v", at, f, want)
		}
		if a, b := bals[0].Table().Fingerprint(now), bals[1].Table().Fingerprint(now); a != b {
			t.Errorf("at t0+%v: fingerprints %016x and %016x differ", at, a, b)
		}
	}

	b := bals[0]
	if err := b.RampFrom("c", t0.Add(-time.Hour), t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := stateOf(t, b, "c", t0.Add(2*time.Second)); st != Up {
		t.Errorf("ramped from an hour ago: %v, want up", st)
	}
	if err := b.Drain("c", t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := b.RampFrom("c", t0, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := stateOf(t, b, "c", t0.Add(2*time.Second)); st != Draining {
		t.Errorf("draining, then ramped from: %v, want draining still", st)
	}
	if err := b.RampFrom("nope", t0, t0); err == nil {
		t.Error("RampFrom of an unknown instance: no error")
	}
}

// TestJoinRamp: an instance at f = 1 joins a ramp from a moment whose
// ramp is not over; one on a ramp of its own (enabled after a drain)
// keeps it, and a ramp over by now changes nothing.
func TestJoinRamp(t *testing.T) {
	params := loadfactor.Params{Start: 0.25, Increase: 0.25, Period: time.Second}
	in := []config.Instance{{Name: "a", Weight: 100}, {Name: "b", Weight: 100}, {Name: "c", Weight: 100}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b, err := New(in, params)
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(1500 * time.Millisecond)
	if err := b.JoinRamp("a", t0, now); err != nil {
		t.Fatal(err)
	}
	if err := b.JoinRamp("b", t0.Add(-time.Hour), now); err != nil {
		t.Fatal(err)
	}
	if err := b.Drain("c", t0); err != nil {
		t.Fatal(err)
	}
	if err := b.Enable("c", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	before := b.Table().Version()
	if err := b.JoinRamp("c", t0, now); err != nil {
		t.Fatal(err)
	}
	if v := b.Table().Version(); v != before {
		t.Errorf("c, ramping after its enable, was changed by JoinRamp (version %d, was %d)", v, before)
	}
	for _, st := range b.Table().Status(now) {
		want := map[string]float64{"a": 0.5, "b": 1, "c": 0.5}[st.Instance.Name]
		if st.Factor != want {
			t.Errorf("%s at t0+1.5s: %v, want %v", st.Instance.Name, st.Factor, want)
		}
	}
	if err := b.JoinRamp("nope", t0, now); err == nil {
		t.Error("JoinRamp of an unknown instance: no error")
	}
}

func stateOf(t *testing.T, b *Balancer, name string, now time.Time) State {
	t.Helper()
	for _, st := range b.Table().Status(now) {
		if st.Instance.Name == name {
			return st.State
		}
	}
	t.Fatalf("%s not in the table", name)
	return 0
}

// TestEnableDrainFrom: an enable or a drain decided on another node, given
// with the factor its ramp starts from, leaves a balancer that missed what
// came before in the state of one that saw it all.
func TestEnableDrainFrom(t *testing.T) {
	params := loadfactor.Params{Start: 0.25, Increase: 0.25, Period: time.Second}
	insts := []config.Instance{{Name: "a", Weight: 100}, {Name: "b", Weight: 100}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	saw, missed := mustNew(t, insts, params), mustNew(t, insts, params)

	// saw: drained at t0, enabled at t0+1.5 s from where the drain was.
	if err := saw.Drain("a", t0); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(1500 * time.Millisecond)
	from := saw.Table().Status(at)[0].Factor
	if err := saw.Enable("a", at); err != nil {
		t.Fatal(err)
	}
	// missed: only the enable, with its factor.
	if err := missed.EnableFrom("a", from, at, at.Add(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	same(t, saw, missed, at)

	// A drain at t0+3 s from the factor then; one applied after it ended.
	at = t0.Add(3 * time.Second)
	from = saw.Table().Status(at)[0].Factor
	if err := saw.Drain("a", at); err != nil {
		t.Fatal(err)
	}
	if err := missed.DrainFrom("a", from, at, at); err != nil {
		t.Fatal(err)
	}
	same(t, saw, missed, at)
	late := mustNew(t, insts, params)
	if err := late.DrainFrom("a", from, at, at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if st := stateOf(t, late, "a", at.Add(time.Hour)); st != Disabled {
		t.Errorf("drain applied after it ended: %v, want disabled", st)
	}
}

func mustNew(t *testing.T, insts []config.Instance, params loadfactor.Params) *Balancer {
	t.Helper()
	b, err := New(insts, params)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// same checks two balancers agree at every half period for 5 s from t.
func same(t *testing.T, x, y *Balancer, from time.Time) {
	t.Helper()
	for k := range 10 {
		now := from.Add(time.Duration(k) * 500 * time.Millisecond)
		sx, sy := x.Table().Status(now)[0], y.Table().Status(now)[0]
		if sx.State != sy.State || sx.Factor != sy.Factor || !sx.NextChange.Equal(sy.NextChange) {
			t.Errorf("at %v: %v f=%v next %v, and %v f=%v next %v", now, sx.State, sx.Factor, sx.NextChange, sy.State, sy.Factor, sy.NextChange)
		}
	}
}
