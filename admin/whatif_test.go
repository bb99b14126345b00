package admin

import (
	"encoding/json"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"clb/balancer"
	"clb/loadfactor"
)

// TestWhatIf: removing b moves b's third of the keys, all to their replica
// partners, over a and c; adding d moves a quarter, all to d, each with its
// old owner as its new replica partner; nothing changes; what-ifs of both
// at once and of a weight agree with their shares.
func TestWhatIf(t *testing.T) {
	f := start(t, Options{})
	before := f.status()

	var rm WhatIf
	if code, body := f.call("GET", "/api/v1/whatif?remove=b", &rm); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	full := byName(before, "b").FullShare
	if rm.Moved != full || rm.ToReplica != rm.Moved || rm.Unsafe != 0 || rm.Keys != 1<<20 || rm.Version != before.Version {
		t.Errorf("remove b: %+v, b's share %v", rm, full)
	}
	if len(rm.Moves) != 2 || rm.Moves[0].From != "b" || rm.Moves[1].From != "b" ||
		math.Abs(rm.Moves[0].Share+rm.Moves[1].Share-full) > 1e-12 || rm.Moves[0].To == rm.Moves[1].To {
		t.Errorf("remove b: moves %+v", rm.Moves)
	}
	for _, sh := range rm.Shares {
		if want := map[string]float64{"a": 0.5, "b": 0, "c": 0.5}[sh.Name]; math.Abs(sh.After-want) > 0.01 {
			t.Errorf("remove b: %s's share after %v, want %v", sh.Name, sh.After, want)
		}
	}
	if len(rm.Remove) != 1 || len(rm.Add) != 0 {
		t.Errorf("remove b: echoed %v %v", rm.Remove, rm.Add)
	}

	var add WhatIf
	if code, body := f.call("GET", "/api/v1/whatif?add=d:100", &add); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if math.Abs(add.Moved-0.25) > 0.005 || add.ToNewPartner != add.Moved || add.Unsafe != 0 {
		t.Errorf("add d: %+v", add)
	}
	for _, m := range add.Moves {
		if m.To != "d" {
			t.Errorf("add d: a move %+v", m)
		}
	}
	if len(add.Add) != 1 || add.Add[0] != (Added{Name: "d", Weight: 100}) {
		t.Errorf("add d: echoed %+v", add.Add)
	}

	var both WhatIf
	if code, body := f.call("GET", "/api/v1/whatif?remove=b&add=d:100&remove=c", &both); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	// b's and c's keys move, and of a's those where d ranks before a, the
	// first of three: a quarter.
	if math.Abs(both.Moved-(2.0/3+1.0/12)) > 0.01 {
		t.Errorf("remove b, c and add d: %v moved, want 3/4", both.Moved)
	}
	if sh := shareAfter(both, "d"); math.Abs(sh-0.5) > 0.01 {
		t.Errorf("remove b, c and add d: d's share %v, want 0.5", sh)
	}

	var heavier WhatIf
	if code, body := f.call("GET", "/api/v1/whatif?remove=a&add=a:200", &heavier); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if sh := shareAfter(heavier, "a"); math.Abs(sh-0.5) > 0.01 {
		t.Errorf("a at weight 200: share %v, want 0.5", sh)
	}

	if after := f.status(); after.Version != before.Version || byName(after, "b").State != "up" {
		t.Errorf("a what-if changed the table: version %d → %d", before.Version, after.Version)
	}
}

func shareAfter(w WhatIf, name string) float64 {
	for _, sh := range w.Shares {
		if sh.Name == name {
			return sh.After
		}
	}
	return math.NaN()
}

// TestWhatIfErrors: a missing or malformed change is 400, an unknown
// instance 404, each with the reason.
func TestWhatIfErrors(t *testing.T) {
	f := start(t, Options{})
	for _, tc := range []struct {
		name, query string
		code        int
		msg         string
	}{
		{name: "nothing", query: "", code: 400, msg: "want remove=NAME or add=NAME:WEIGHT"},
		{name: "no weight", query: "add=d", code: 400, msg: `add: "d": want NAME:WEIGHT`},
		{name: "bad weight", query: "add=d:-1", code: 400, msg: "want NAME:WEIGHT"},
		{name: "empty remove", query: "remove=", code: 400, msg: "remove: want an instance name"},
		{name: "unknown", query: "remove=zz", code: 404, msg: `unknown instance "zz"`},
		{name: "configured", query: "add=a:100", code: 400, msg: "a is configured already"},
	} {
		code, body := f.call("GET", "/api/v1/whatif?"+tc.query, nil)
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(body), &e); err != nil || code != tc.code || !strings.Contains(e.Error, tc.msg) {
			t.Errorf("%s: %d %s, want %d with %q", tc.name, code, body, tc.code, tc.msg)
		}
	}
}

// TestWhatIfOneAtATime: while a what-if runs, another waits and then gets
// 429 with Retry-After; an answer kept for the same table is given at once;
// a new table, or a ramp's step, ends what is kept.
func TestWhatIfOneAtATime(t *testing.T) {
	var clock atomic.Int64
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	clock.Store(now.UnixNano())
	bal, err := balancer.New(instances(), loadfactor.Params{Start: 0.25, Increase: 0.25, Period: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	f := startWith(t, Options{Balancer: bal, Now: func() time.Time { return time.Unix(0, clock.Load()).UTC() }},
		func(s *Server) { s.whatifs.queue = 0 })
	var first WhatIf
	if code, body := f.call("GET", "/api/v1/whatif?remove=b", &first); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	f.srv.whatifs.running <- struct{}{} // one runs
	var kept WhatIf
	if code, body := f.call("GET", "/api/v1/whatif?remove=b", &kept); code != 200 || kept.TookMS != first.TookMS {
		t.Errorf("the same what-if while another runs: %d %s", code, body)
	}
	code, body := f.call("GET", "/api/v1/whatif?remove=c", nil)
	if code != 429 || !strings.Contains(body, "another what-if is running") {
		t.Errorf("a new what-if while another runs: %d %s", code, body)
	}
	if code, _ := f.call("GET", "/api/v1/whatif/drains", nil); code != 429 {
		t.Errorf("drains while another runs: %d", code)
	}
	<-f.srv.whatifs.running

	// A ramp: kept until its next step.
	if err := bal.Drain("c", now); err != nil {
		t.Fatal(err)
	}
	if code, body := f.call("GET", "/api/v1/whatif?remove=b", nil); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	f.srv.whatifs.running <- struct{}{}
	if code, body := f.call("GET", "/api/v1/whatif?remove=b", nil); code != 200 {
		t.Errorf("kept within the ramp's step: %d %s", code, body)
	}
	clock.Add(int64(time.Minute))
	if code, _ := f.call("GET", "/api/v1/whatif?remove=b", nil); code != 429 {
		t.Errorf("kept past the ramp's step: %d", code)
	}
	<-f.srv.whatifs.running
}

// TestWhatIfDrains: one answer for every instance, each the what-if of
// removing it.
func TestWhatIfDrains(t *testing.T) {
	f := start(t, Options{})
	var d Drains
	if code, body := f.call("GET", "/api/v1/whatif/drains", &d); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if len(d.Drains) != 3 {
		t.Fatalf("drains %+v", d)
	}
	for _, di := range d.Drains {
		var rm WhatIf
		if code, body := f.call("GET", "/api/v1/whatif?remove="+di.Name, &rm); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		if di.Moved != rm.Moved || di.ToReplica != rm.Moved || len(di.Moves) != len(rm.Moves) || di.Moves[0] != rm.Moves[0] {
			t.Errorf("drain %s: %+v, removal %+v", di.Name, di.Effect, rm.Effect)
		}
	}
}
