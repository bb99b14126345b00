package loadfactor

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// epoch is the fixed "now" of these tests.
func epoch() time.Time { return time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) }

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		p     Params
		field string // "" for valid
	}{
		{name: "defaults", p: DefaultParams()},
		{name: "start 0, increase 1", p: Params{Start: 0, Increase: 1, Period: time.Second}},
		{name: "start above 1", p: Params{Start: 1.5, Increase: 0.1, Period: time.Second}, field: "start"},
		{name: "negative start", p: Params{Start: -0.1, Increase: 0.1, Period: time.Second}, field: "start"},
		{name: "NaN start", p: Params{Start: math.NaN(), Increase: 0.1, Period: time.Second}, field: "start"},
		{name: "zero increase", p: Params{Start: 0.1, Increase: 0, Period: time.Second}, field: "increase"},
		{name: "increase above 1", p: Params{Start: 0.1, Increase: 2, Period: time.Second}, field: "increase"},
		{name: "zero period", p: Params{Start: 0.1, Increase: 0.1}, field: "period"},
	} {
		err := tc.p.Validate()
		pe, _ := err.(*ParamError)
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.field != "" && (pe == nil || pe.Field != tc.field):
			t.Errorf("%s: error %v, want one about %s", tc.name, err, tc.field)
		}
	}
}

func TestRampUp(t *testing.T) {
	t0 := epoch()
	p := DefaultParams() // 0.1, +0.1 every 10s
	r := Up(p, 0, t0)
	if !r.Rising() || r.Falling() {
		t.Fatal("Up is not rising")
	}
	for step := range 12 {
		now := t0.Add(time.Duration(step) * p.Period)
		want := math.Min(1, 0.1+0.1*float64(step))
		if got := r.Factor(now); math.Abs(got-want) > 1e-9 {
			t.Errorf("step %d: f = %v, want %v", step, got, want)
		}
		// Constant within a period.
		if got := r.Factor(now.Add(p.Period - time.Nanosecond)); math.Abs(got-want) > 1e-9 {
			t.Errorf("step %d, end of period: f = %v, want %v", step, got, want)
		}
	}
	if end := r.End(); !end.Equal(t0.Add(9 * p.Period)) {
		t.Errorf("End %v, want 9 periods after start", end)
	}
	if r.Done(t0.Add(9*p.Period-1)) || !r.Done(t0.Add(9*p.Period)) {
		t.Error("Done does not switch at End")
	}
	if got := r.Factor(t0.Add(9 * p.Period)); got != 1 {
		t.Errorf("f at End = %v, want exactly 1", got)
	}
	for _, tc := range []struct{ now, want time.Time }{
		{t0.Add(-time.Hour), t0.Add(p.Period)},
		{t0, t0.Add(p.Period)},
		{t0.Add(p.Period - 1), t0.Add(p.Period)},
		{t0.Add(p.Period), t0.Add(2 * p.Period)},
		{t0.Add(8*p.Period + 1), t0.Add(9 * p.Period)},
	} {
		if got, ok := r.NextChange(tc.now); !ok || !got.Equal(tc.want) {
			t.Errorf("NextChange(%v) = %v, want %v", tc.now.Sub(t0), got.Sub(t0), tc.want.Sub(t0))
		}
	}
	if _, ok := r.NextChange(r.End()); ok {
		t.Error("NextChange after the end")
	}
	if got := r.Factor(t0.Add(-time.Hour)); got != 0.1 {
		t.Errorf("f before the ramp began = %v, want start", got)
	}
	// An instance already above start keeps its factor.
	if got := Up(p, 0.55, t0).Factor(t0); got != 0.55 {
		t.Errorf("Up from 0.55: f = %v", got)
	}
	if got := p.Steps(); got != 9 {
		t.Errorf("Steps = %d, want 9", got)
	}
}

func TestDrain(t *testing.T) {
	t0 := epoch()
	p := Params{Start: 0.1, Increase: 0.25, Period: time.Minute}
	r := Down(p, 1, t0)
	if !r.Falling() || r.Rising() {
		t.Fatal("Down is not falling")
	}
	for step, want := range []float64{0.75, 0.5, 0.25, 0, 0} {
		if got := r.Factor(t0.Add(time.Duration(step) * p.Period)); math.Abs(got-want) > 1e-9 {
			t.Errorf("step %d: f = %v, want %v", step, got, want)
		}
	}
	if !r.End().Equal(t0.Add(3 * p.Period)) {
		t.Errorf("End %v, want 3 periods after start", r.End())
	}
	if got := r.Factor(r.End()); got != 0 {
		t.Errorf("f at End = %v, want exactly 0", got)
	}
	// Draining from part way up.
	if got := Down(p, 0.3, t0).Factor(t0.Add(p.Period)); got != 0 {
		t.Errorf("drain from 0.3: f after one period = %v, want 0", got)
	}
}

func TestFull(t *testing.T) {
	t0 := epoch()
	r := Full()
	if r.Factor(t0) != 1 || !r.Done(t0) || r.Rising() || r.Falling() || !r.End().IsZero() {
		t.Errorf("Full: f %v, done %v", r.Factor(t0), r.Done(t0))
	}
}

// TestUnitUniform: u is uniform over all keys and over the keys of one slot
// (hashes that share their top 20 bits), so admission by u < f takes an f
// share of any slot's keys.
func TestUnitUniform(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	check := func(name string, hash func() uint64) {
		const n, bins = 200_000, 20
		var count [bins]int
		for range n {
			u := Unit(hash())
			if u < 0 || u >= 1 {
				t.Fatalf("%s: u = %v", name, u)
			}
			count[int(u*bins)]++
		}
		// Chi-square with 19 degrees of freedom; 43.8 is its 0.999 quantile.
		chi, want := 0.0, float64(n)/bins
		for _, c := range count {
			chi += (float64(c) - want) * (float64(c) - want) / want
		}
		if chi > 43.8 {
			t.Errorf("%s: chi-square %.1f over %d bins: u is not uniform", name, chi, bins)
		}
	}
	check("all keys", r.Uint64)
	slot := r.Uint64() &^ (1<<44 - 1)
	check("one slot", func() uint64 { return slot | r.Uint64()>>20 })
	if Admits(0.5, 0.5) || !Admits(0.49, 0.5) || Admits(0, 0) {
		t.Error("Admits is not u < f")
	}
}
