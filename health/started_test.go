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

// TestRampFromStarted: an instance that says when it started (X-CLB-Started,
// over HTTP and in a SIP answer) is ramped from then plus the rise it takes
// to be seen up (rise × interval), so two clb nodes that
// see it come back at different moments give it the same load factor at the
// same time (SPEC section 11); one that says nothing is ramped from when
// each saw it, as before.
func TestRampFromStarted(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var started atomic.Int64 // Unix seconds the instances report; 0: none
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
	in := []config.Instance{
		{Name: "web", Weight: 100, HTTP: config.HTTPAddr{Endpoint: endpoint("http", ln.Addr().(*net.TCPAddr).Port)}},
		{Name: "sip", Weight: 100, SIP: config.SIPAddr{Endpoint: endpoint("udp", uas.LocalAddr().(*net.UDPAddr).Port)}},
	}
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
