// Package procs owns the process's GOMAXPROCS while clb runs: one P while
// clb's whole load fits well inside one core, all of them as soon as it
// does not.
//
// Why: with several Ps, a goroutine made ready while another runs wakes an
// idle P's thread, which spins, finds little and sleeps again (a futex
// each way). At moderate rates that is most of what a message costs
// beyond its system calls: SIP over TCP at 2,000 calls/s used 0.85× the
// CPU with one P (context switches 23 k against 39 k, futex calls 150
// against 10,700 in 10 s). One P is one core at most, though, so the
// controller raises GOMAXPROCS to its maximum within a tick of one core
// filling, and lowers it again only when the load has stayed low for a
// whole window after that: at most one lowering a window, so the two
// thresholds do not flap.
//
// Busy is the process's CPU time (user and system, all threads) over wall
// time, read every tick: one getrusage every 100 ms.
//
// An operator who sets GOMAXPROCS in the environment has chosen: Run then
// leaves it alone.
//
// Concurrency: Run is one goroutine and the only caller of its Set; the
// controller's state is that goroutine's.
package procs

import (
	"context"
	"os"
	"runtime"
	"time"

	"go.uber.org/zap"
)

// Options are a controller's thresholds and, for tests, its clock, CPU
// reading and setter. The zero value of each field is its default.
type Options struct {
	Max    int           // GOMAXPROCS when busy (default: as at start)
	Tick   time.Duration // how often CPU time is read (100 ms)
	Window time.Duration // the low load must last this long to lower (1 s)
	// Raise: cores busy over one tick, at one P, that raise to Max (0.7);
	// Lower: cores busy over a window, at Max, that lower to one (0.35).
	Raise, Lower float64

	CPU func() time.Duration // the process's CPU time (getrusage)
	Set func(n int)          // runtime.GOMAXPROCS
}

func (o *Options) defaults() {
	if o.Max == 0 {
		o.Max = runtime.GOMAXPROCS(0)
	}
	if o.Tick == 0 {
		o.Tick = 100 * time.Millisecond
	}
	if o.Window == 0 {
		o.Window = time.Second
	}
	if o.Raise == 0 {
		o.Raise = 0.7
	}
	if o.Lower == 0 {
		o.Lower = 0.35
	}
	if o.CPU == nil {
		o.CPU = cpuTime
	}
	if o.Set == nil {
		o.Set = func(n int) { runtime.GOMAXPROCS(n) }
	}
}

// Chosen reports whether the environment sets GOMAXPROCS.
func Chosen() bool { return os.Getenv("GOMAXPROCS") != "" }

// Run adapts GOMAXPROCS until ctx ends, then restores Max. It starts at
// Max: nothing is lowered before a window of low load has been seen.
func Run(ctx context.Context, o Options, log *zap.Logger) {
	if !supported && o.CPU == nil {
		return
	}
	o.defaults()
	if o.Max <= 1 {
		return
	}
	t := time.NewTicker(o.Tick)
	defer t.Stop()
	c := newController(o, time.Now(), o.CPU())
	defer func() {
		if c.cur != o.Max {
			o.Set(o.Max)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cpu := o.CPU()
			if n, busy, ok := c.observe(now, cpu); ok {
				o.Set(n)
				if ce := log.Check(zap.DebugLevel, "GOMAXPROCS"); ce != nil {
					ce.Write(zap.Int("procs", n), zap.Float64("busy_cores", busy))
				}
			}
		}
	}
}

// sample is the process's CPU time at an instant.
type sample struct {
	at  time.Time
	cpu time.Duration
}

func (a sample) busy(b sample) float64 {
	wall := b.at.Sub(a.at)
	if wall <= 0 {
		return 0
	}
	return float64(b.cpu-a.cpu) / float64(wall)
}

// controller is the decision, fed a sample each tick.
type controller struct {
	o      Options
	cur    int
	last   sample // the tick before
	window sample // the start of the low-load window, at Max
}

func newController(o Options, now time.Time, cpu time.Duration) *controller {
	s := sample{now, cpu}
	return &controller{o: o, cur: o.Max, last: s, window: s}
}

// observe takes a tick's sample; it returns the GOMAXPROCS to set, the
// cores busy that decided it and true when it changes.
func (c *controller) observe(now time.Time, cpu time.Duration) (int, float64, bool) {
	s := sample{now, cpu}
	tick := c.last.busy(s)
	c.last = s
	if c.cur == 1 {
		if tick >= c.o.Raise {
			c.cur, c.window = c.o.Max, s
			return c.cur, tick, true
		}
		return 0, 0, false
	}
	if now.Sub(c.window.at) < c.o.Window {
		return 0, 0, false
	}
	busy := c.window.busy(s)
	c.window = s
	if busy < c.o.Lower {
		c.cur = 1
		return 1, busy, true
	}
	return 0, 0, false
}
