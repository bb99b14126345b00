package health

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
)

// startedInstances runs an HTTP instance ("web") and a SIP one ("sip")
// on loopback until the test ends, whose probe answers say they started at
// the Unix seconds in started (nothing while it is 0).
func startedInstances(t *testing.T, started *atomic.Int64) []config.Instance {
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := started.Load(); s != 0 {
			w.Header().Set(StartedField, strconv.FormatInt(s, 10))
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go web.Serve(ln)
	t.Cleanup(func() { web.Close() })
	uas, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uas.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := uas.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := gosip.ParseMessage(buf[:n])
			req, ok := m.(*gosip.Request)
			if err != nil || !ok {
				continue
			}
			res := gosip.NewResponseFromRequest(req, 200, "OK", nil)
			if s := started.Load(); s != 0 {
				res.AppendHeader(gosip.NewHeader(StartedField, strconv.FormatInt(s, 10)))
			}
			_, _ = uas.WriteTo([]byte(res.String()), from)
		}
	}()
	return []config.Instance{
		{Name: "web", Weight: 100, HTTP: config.HTTPAddr{Endpoint: endpoint("http", ln.Addr().(*net.TCPAddr).Port)}},
		{Name: "sip", Weight: 100, SIP: config.SIPAddr{Endpoint: endpoint("udp", uas.LocalAddr().(*net.UDPAddr).Port)}},
	}
}

// TestRampFromStarted: an instance that says when it started (X-CLB-Started,
// over HTTP and in a SIP answer) is ramped from then plus the rise it takes
// to be seen up (rise × interval), so two clb nodes that
// see it come back at different moments give it the same load factor at the
// same time (SPEC section 11); one that says nothing is ramped from when
// each saw it, as before.
func TestRampFromStarted(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var started atomic.Int64 // Unix seconds the instances report; 0: none
	in := startedInstances(t, &started)
	params := loadfactor.Params{Start: 0.1, Increase: 0.1, Period: 10 * time.Second}
	cfg := config.Health{Active: true, Interval: time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 1, HTTPPath: "/"}
	type node struct {
		bal   *balancer.Balancer
		clock *fakeClock
		c     *Checker
	}
	newNode := func() node {
		bal, err := balancer.New(in, params)
		if err != nil {
			t.Fatal(err)
		}
		n := node{bal: bal, clock: &fakeClock{now: t0}}
		n.c = New(bal, nil, nil, n.clock.Now)
		n.c.Update(cfg, in)
		for _, inst := range in {
			n.c.Report(inst.Name, false) // fall 1: down, as after a crash
		}
		return n
	}
	factor := func(n node, name string, at time.Time) float64 {
		for _, s := range n.bal.Table().Status(at) {
			if s.Instance.Name == name {
				return s.Factor
			}
		}
		t.Fatalf("no %s", name)
		return 0
	}
	ctx := context.Background()
	type check struct {
		at   time.Duration // after t0
		want [2]float64    // node A's factor, node B's
	}
	for _, tc := range []struct {
		name    string
		started time.Time     // zero: the instances say nothing
		seenA   time.Duration // when node A sees them back, after t0 (B: 9 s)
		checks  []check
	}{
		// Seen back 1 s and 9 s after t0: both ramp from t0 + rise ×
		// interval (1 s), and are at their second step 12 s after t0.
		{name: "started said", started: t0, seenA: time.Second, checks: []check{{12 * time.Second, [2]float64{0.2, 0.2}}}},
		// A sees them back before t0 + rise × interval (its first probe
		// right after their start): it holds the start value until then,
		// and steps at the same moments as B (t0 + 11 s), not 0.5 s before.
		{name: "seen before the anchor", started: t0, seenA: 500 * time.Millisecond, checks: []check{
			{10*time.Second + 750*time.Millisecond, [2]float64{0.1, 0.1}},
			{11 * time.Second, [2]float64{0.2, 0.2}},
		}},
		// Each from when it saw it: 11 s and 3 s into their ramps.
		{name: "nothing said", seenA: time.Second, checks: []check{{12 * time.Second, [2]float64{0.2, 0.1}}}},
		// A started an hour ahead of the nodes' clocks is a wrong clock:
		// as if nothing was said.
		{name: "started far ahead", started: t0.Add(time.Hour), seenA: time.Second, checks: []check{{12 * time.Second, [2]float64{0.2, 0.1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.started.IsZero() {
				started.Store(0)
			} else {
				started.Store(tc.started.Unix())
			}
			a, b := newNode(), newNode()
			a.clock.advance(tc.seenA)
			a.c.CheckOnce(ctx)
			b.clock.advance(9 * time.Second)
			b.c.CheckOnce(ctx)
			for _, c := range tc.checks {
				at := t0.Add(c.at)
				for _, name := range []string{"web", "sip"} {
					if fa, fb := factor(a, name, at), factor(b, name, at); fa != c.want[0] || fb != c.want[1] {
						t.Errorf("%s at t0+%v: node A %.2f, node B %.2f; want %.2f and %.2f", name, c.at, fa, fb, c.want[0], c.want[1])
					}
				}
			}
		})
	}
}

// TestJoinRamps: a node started while the other nodes ramp an instance up
// (it came back 12 s before, and says when it started) joins their ramp at
// its first probe: the same load factor at the same moments as a node that
// saw it come back. A node alone (SetJoinRamps off) starts it at f = 1
// (SPEC section 3), and so does a joining node for an instance whose ramp
// from its start is over, or that says nothing; an instance added later
// keeps the ramp the balancer gave it.
func TestJoinRamps(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var started atomic.Int64
	in := startedInstances(t, &started)
	params := loadfactor.Params{Start: 0.1, Increase: 0.1, Period: 10 * time.Second}
	cfg := config.Health{Active: true, Interval: time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 1, HTTPPath: "/"}
	ctx := context.Background()
	// A node that has run since before t0: the instances die and come back
	// at t0 (they say so), it sees them up 1 s later.
	bal, err := balancer.New(in, params)
	if err != nil {
		t.Fatal(err)
	}
	runningClock := &fakeClock{now: t0.Add(-time.Minute)}
	running := New(bal, nil, nil, runningClock.Now)
	running.Update(cfg, in)
	for _, inst := range in {
		running.Report(inst.Name, false)
	}
	started.Store(t0.Unix())
	runningClock.advance(time.Minute + time.Second)
	running.CheckOnce(ctx)

	// newcomer is a node started at t0 + 12 s.
	newcomer := func(join bool) *balancer.Balancer {
		bal, err := balancer.New(in, params)
		if err != nil {
			t.Fatal(err)
		}
		clock := &fakeClock{now: t0.Add(12 * time.Second)}
		c := New(bal, nil, nil, clock.Now)
		c.SetJoinRamps(join)
		c.Update(cfg, in)
		c.CheckOnce(ctx)
		return bal
	}
	factor := func(b *balancer.Balancer, name string, at time.Time) float64 {
		for _, s := range b.Table().Status(at) {
			if s.Instance.Name == name {
				return s.Factor
			}
		}
		t.Fatalf("no %s", name)
		return 0
	}
	joined, alone := newcomer(true), newcomer(false)
	for _, at := range []time.Duration{12 * time.Second, 21 * time.Second, 31 * time.Second, 2 * time.Minute} {
		for _, name := range []string{"web", "sip"} {
			want := factor(bal, name, t0.Add(at))
			if got := factor(joined, name, t0.Add(at)); got != want {
				t.Errorf("%s at t0+%v: %.2f on the node that joined, %.2f on the one that saw it return", name, at, got, want)
			}
			if got := factor(alone, name, t0.Add(at)); got != 1 {
				t.Errorf("%s at t0+%v: %.2f on a node alone, want 1 (found healthy at its start)", name, at, got)
			}
		}
	}
	if f := factor(bal, "web", t0.Add(12*time.Second)); f != 0.2 {
		t.Errorf("the running node's factor at t0+12s is %.2f, want 0.2: the test proves nothing", f)
	}
	// Started long ago, or said nothing: f = 1 at once.
	for _, s := range []int64{t0.Add(-time.Hour).Unix(), 0} {
		started.Store(s)
		if f := factor(newcomer(true), "web", t0.Add(12*time.Second)); f != 1 {
			t.Errorf("started %d: %.2f on the node that joined, want 1", s, f)
		}
	}
	// Only the first probe of an instance of the start joins: one added
	// later keeps the ramp it was added with.
	started.Store(t0.Unix())
	bal2, err := balancer.New(in[:1], params)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: t0.Add(12 * time.Second)}
	c := New(bal2, nil, nil, clock.Now)
	c.SetJoinRamps(true)
	c.Update(cfg, in[:1])
	c.CheckOnce(ctx)
	if err := bal2.Update(in, params, clock.Now()); err != nil {
		t.Fatal(err)
	}
	c.SetInstances(in)
	clock.advance(time.Second)
	c.CheckOnce(ctx)
	if f := factor(bal2, "sip", t0.Add(13*time.Second)); f != 0.1 {
		t.Errorf("sip added at t0+12s: %.2f at t0+13s, want 0.1 (the ramp from its addition)", f)
	}
}
