package procs

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
)

// phase is a load: cores busy for a while.
type phase struct {
	d     time.Duration
	cores float64
}

// scripted is a process's CPU time under phases, from start.
func scripted(start time.Time, phases []phase) func() time.Duration {
	return func() time.Duration {
		left, cpu := time.Since(start), time.Duration(0)
		for _, p := range phases {
			d := min(left, p.d)
			cpu += time.Duration(float64(d) * p.cores)
			if left -= d; left == 0 {
				break
			}
		}
		return cpu
	}
}

type set struct {
	at time.Duration
	n  int
}

// Lowered after a window of low load, raised within a tick of one core
// filling, kept between the thresholds, Max again when Run ends.
func TestRunFollowsLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		phases := []phase{
			{3 * time.Second, 0.2},
			{time.Second, 0.9},
			{3 * time.Second, 0.5},
			{2 * time.Second, 0.1},
		}
		var mu sync.Mutex
		var sets []set
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(ctx, Options{Max: 2, CPU: scripted(start, phases), Set: func(n int) {
				mu.Lock()
				sets = append(sets, set{time.Since(start), n})
				mu.Unlock()
			}}, zap.NewNop())
		}()
		time.Sleep(9 * time.Second) // the phases, on the bubble's clock
		synctest.Wait()
		cancel()
		<-done
		want := []set{{time.Second, 1}, {3100 * time.Millisecond, 2}, {8100 * time.Millisecond, 1}, {9 * time.Second, 2}}
		if len(sets) != len(want) {
			t.Fatalf("set %v, want %v", sets, want)
		}
		for i := range want {
			if sets[i] != want[i] {
				t.Errorf("set %v, want %v", sets, want)
				break
			}
		}
	})
}

// The thresholds on both sides, one sample at a time.
func TestControllerThresholds(t *testing.T) {
	o := Options{Max: 4}
	o.defaults()
	t0 := time.Unix(1000, 0)
	tick := func(c *controller, i int, cores float64) (int, bool) {
		at := t0.Add(time.Duration(i) * o.Tick)
		cpu := c.last.cpu + time.Duration(float64(at.Sub(c.last.at))*cores)
		n, _, ok := c.observe(at, cpu)
		return n, ok
	}
	c := newController(o, t0, 0)
	for i := 1; i < 10; i++ { // under a window: never lowered
		if _, ok := tick(c, i, 0); ok {
			t.Fatalf("lowered at tick %d, before a window", i)
		}
	}
	if n, ok := tick(c, 10, 0.36); !ok || n != 1 { // window mean 0.036
		t.Fatalf("after a window at 0.04 cores: %d %v, want 1", n, ok)
	}
	if _, ok := tick(c, 11, 0.69); ok {
		t.Fatal("raised below Raise")
	}
	if n, ok := tick(c, 12, 0.7); !ok || n != 4 {
		t.Fatalf("a tick at Raise: %d %v, want 4", n, ok)
	}
	for i := 13; i < 22; i++ {
		if _, ok := tick(c, i, 0); ok {
			t.Fatalf("lowered at tick %d, within a window of raising", i)
		}
	}
	// The window since raising averages 0.35 cores: not below Lower.
	if _, ok := tick(c, 22, 3.5); ok {
		t.Fatal("lowered at Lower")
	}
	for i := 23; i < 32; i++ {
		tick(c, i, 0.3)
	}
	if n, ok := tick(c, 32, 0.3); !ok || n != 1 {
		t.Fatalf("a window at 0.3 cores: %d %v, want 1", n, ok)
	}
}

func TestChosenByEnvironment(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	if Chosen() {
		t.Error("chosen with GOMAXPROCS empty")
	}
	t.Setenv("GOMAXPROCS", "3")
	if !Chosen() {
		t.Error("not chosen with GOMAXPROCS=3")
	}
}

// cpuTime grows while the process works.
func TestCPUTime(t *testing.T) {
	if !supported {
		t.Skip("no getrusage here")
	}
	before, x, start := cpuTime(), 0, time.Now()
	for cpuTime() < before+time.Millisecond {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("CPU time %v after 10 s of work, from %v", cpuTime(), before)
		}
		for i := range 1 << 16 {
			x += i
		}
	}
	_ = x
}
