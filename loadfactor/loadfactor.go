// Package loadfactor owns the load factor f in [0, 1] of SPEC section 3 and the
// admission test u(key) < f.
//
// A ramp is a value: it says where f started, when, and which way it goes, and
// Factor(now) computes f from it, so f is a pure function of time and nothing
// ticks to move it. Ramping up starts at Params.Start (or where f already is,
// if higher) and gains Params.Increase every Params.Period until 1. Draining
// is the same ramp downwards: it loses Increase at once and every Period after,
// until 0.
//
// u(key) is a second hash of the key: the splitmix64 finalizer (a bijection
// with full avalanche) of the key's 64-bit hash with a constant folded in. The
// routing slot uses the top bits of that hash; u takes every bit of it through
// the mixer, so among the keys of any slot u is uniform and raising f admits a
// uniform slice of them.
//
// Concurrency: every type here is an immutable value; use from any goroutine.
package loadfactor

import (
	"fmt"
	"math"
	"time"

	"clb/hashing"
)

// Params are the ramp settings (YAML loadfactor.start, .increase, .period).
type Params struct {
	Start    float64
	Increase float64
	Period   time.Duration
}

// DefaultParams are SPEC section 9a's defaults.
func DefaultParams() Params {
	return Params{Start: 0.1, Increase: 0.1, Period: 10 * time.Second}
}

// ParamError is a setting out of range.
type ParamError struct {
	Field string // "start", "increase" or "period"
	Msg   string
}

func (e *ParamError) Error() string { return e.Field + ": " + e.Msg }

// Validate reports the first setting out of range as a *ParamError.
func (p Params) Validate() error {
	switch {
	case !(p.Start >= 0 && p.Start <= 1):
		return &ParamError{"start", fmt.Sprintf("%v is outside [0, 1]", p.Start)}
	case !(p.Increase > 0 && p.Increase <= 1):
		return &ParamError{"increase", fmt.Sprintf("%v is outside (0, 1]", p.Increase)}
	case p.Period <= 0:
		return &ParamError{"period", fmt.Sprintf("%v is not positive", p.Period)}
	}
	return nil
}

// Steps is how many periods a ramp from 0 to 1 takes after its start value:
// the number of increases from Start to 1.
func (p Params) Steps() int { return stepsBetween(p.Start, 1, p.Increase) }

// Ramp is the course of one instance's load factor.
type Ramp struct {
	from   float64
	step   float64 // +Increase up, -Increase down; 0 steady
	period time.Duration
	since  time.Time
}

// Full is the ramp of an instance at f = 1 for good.
func Full() Ramp { return Ramp{from: 1} }

// Up starts a ramp towards 1 at since, from Start, or from current if that is
// higher (an instance whose drain is cancelled keeps the keys it has).
func Up(p Params, current float64, since time.Time) Ramp {
	return Ramp{from: max(p.Start, clamp(current)), step: p.Increase, period: p.Period, since: since}
}

// Down starts a drain towards 0 at since, from current; the first decrease
// takes effect at since.
func Down(p Params, current float64, since time.Time) Ramp {
	return Ramp{from: clamp(current) - p.Increase, step: -p.Increase, period: p.Period, since: since}
}

// Factor is f at now.
func (r Ramp) Factor(now time.Time) float64 {
	if r.step == 0 {
		return clamp(r.from)
	}
	n := 0.0
	if d := now.Sub(r.since); d > 0 {
		n = float64(d / r.period)
	}
	return clamp(r.from + n*r.step)
}

// Rising reports whether r is a ramp up (false for a drain or a steady ramp).
func (r Ramp) Rising() bool { return r.step > 0 }

// Falling reports whether r is a drain.
func (r Ramp) Falling() bool { return r.step < 0 }

// End is when r reaches 1 (up) or 0 (down); the zero time for a steady ramp.
func (r Ramp) End() time.Time {
	switch {
	case r.step > 0:
		return r.since.Add(time.Duration(stepsBetween(r.from, 1, r.step)) * r.period)
	case r.step < 0:
		return r.since.Add(time.Duration(stepsBetween(0, r.from, -r.step)) * r.period)
	}
	return time.Time{}
}

// NextChange is the first instant after now at which Factor changes; false if
// it never will.
func (r Ramp) NextChange(now time.Time) (time.Time, bool) {
	if r.step == 0 || r.Done(now) {
		return time.Time{}, false
	}
	n := time.Duration(0)
	if d := now.Sub(r.since); d >= 0 {
		n = d / r.period
	}
	return r.since.Add((n + 1) * r.period), true
}

// Done reports whether r has reached its end at now (always for a steady ramp).
func (r Ramp) Done(now time.Time) bool { return r.step == 0 || !now.Before(r.End()) }

// stepsBetween is how many steps of size inc take lo up to hi.
func stepsBetween(lo, hi, inc float64) int {
	if lo >= hi {
		return 0
	}
	// The tolerance keeps 0.1 + 9×0.1 from needing a tenth step.
	return int(math.Ceil((hi-lo)/inc - 1e-9))
}

// clamp keeps f in [0, 1], snapping rounding residue at either end.
func clamp(f float64) float64 {
	switch {
	case f <= 1e-9:
		return 0
	case f >= 1-1e-9:
		return 1
	}
	return f
}

// Unit is u(key) in [0, 1) for a key whose 64-bit hash is keyHash.
func Unit(keyHash uint64) float64 {
	return float64(hashing.Mix(keyHash^0x6a09e667f3bcc909)>>11) * 0x1p-53
}

// Admits is the admission test: a key with u(key) = u is admitted at factor f.
func Admits(u, f float64) bool { return u < f }
