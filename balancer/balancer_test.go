package balancer

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"clb/config"
	"clb/hashing"
	"clb/loadfactor"
)

// epoch is the fixed "now" of these tests.
func epoch() time.Time { return time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) }

func instances(n int, weights ...int) []config.Instance {
	in := make([]config.Instance, n)
	for i := range in {
		in[i] = config.Instance{Name: fmt.Sprintf("inst%d", i), Weight: 100}
		if i < len(weights) {
			in[i].Weight = weights[i]
		}
	}
	return in
}

func mustBalancer(t testing.TB, in []config.Instance, p loadfactor.Params) *Balancer {
	t.Helper()
	b, err := New(in, p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func name(i *config.Instance) string {
	if i == nil {
		return "-"
	}
	return i.Name
}

func TestRouteAllUp(t *testing.T) {
	b := mustBalancer(t, instances(5), loadfactor.DefaultParams())
	now := epoch()
	for k := range 1000 {
		key := fmt.Sprintf("key-%d", k)
		d := b.Route(key, "", now)
		list := b.Table().PreferenceList(nil, key, 2)
		if name(d.Owner) != list[0] || name(d.Replica) != list[1] {
			t.Fatalf("%s: owner %s replica %s, preference list %v", key, name(d.Owner), name(d.Replica), list)
		}
		if d.Repaired || d.Previous != nil || d.Fallback {
			t.Fatalf("%s: unexpected %+v", key, d)
		}
	}
}

func TestStickyRepair(t *testing.T) {
	in := instances(4)
	in = append(in, config.Instance{Name: "idle", Weight: 0})
	b := mustBalancer(t, in, loadfactor.DefaultParams())
	now := epoch()
	key := "alice"
	d := b.Route(key, "", now)
	owner, replica := name(d.Owner), name(d.Replica)

	if d := b.Route(key, owner, now); d.Repaired || d.Previous != nil {
		t.Errorf("last = owner: %+v", d)
	}
	if err := b.SetHealth(owner, false, now); err != nil {
		t.Fatal(err)
	}
	d = b.Route(key, owner, now)
	if name(d.Owner) != replica || !d.Repaired || name(d.Previous) != owner {
		t.Errorf("owner down: owner %s (want %s), repaired %v, previous %s (want %s)", name(d.Owner), replica, d.Repaired, name(d.Previous), owner)
	}
	// A client may send any route: an unknown one is repaired without a
	// Previous, a weight-0 instance is a configured one.
	if d := b.Route(key, "no-such-instance", now); !d.Repaired || d.Previous != nil {
		t.Errorf("unknown last: %+v", d)
	}
	if d := b.Route(key, "idle", now); !d.Repaired || name(d.Previous) != "idle" {
		t.Errorf("weight-0 last: %+v", d)
	}
	for k := range 2000 {
		d := b.Route(fmt.Sprintf("k%d", k), "", now)
		if name(d.Owner) == "idle" || name(d.Replica) == "idle" {
			t.Fatal("weight-0 instance took a key")
		}
	}
}

func TestNoLiveInstance(t *testing.T) {
	b := mustBalancer(t, instances(2), loadfactor.DefaultParams())
	now := epoch()
	for _, n := range []string{"inst0", "inst1"} {
		if err := b.Disable(n, now); err != nil {
			t.Fatal(err)
		}
	}
	if d := b.Route("k", "inst0", now); d.Owner != nil || d.Replica != nil || d.Repaired {
		t.Errorf("all disabled: %+v", d)
	}
	if err := b.Enable("inst1", now); err != nil {
		t.Fatal(err)
	}
	// inst1 alone, ramping: it takes every key, with no replica partner.
	for k := range 100 {
		d := b.Route(fmt.Sprintf("k%d", k), "", now)
		if name(d.Owner) != "inst1" || d.Replica != nil {
			t.Fatalf("one live instance: %+v", d)
		}
	}
}

// TestAllRampingFallback: when no live instance admits a key, the first live
// one of its list takes it and the next live one is its replica partner.
func TestAllRampingFallback(t *testing.T) {
	p := loadfactor.Params{Start: 0, Increase: 0.1, Period: time.Minute}
	b := mustBalancer(t, instances(6), p)
	now := epoch()
	for i := range 6 {
		n := fmt.Sprintf("inst%d", i)
		if err := b.SetHealth(n, false, now); err != nil {
			t.Fatal(err)
		}
		if err := b.SetHealth(n, true, now); err != nil { // back at f = 0
			t.Fatal(err)
		}
	}
	if err := b.SetHealth("inst2", false, now); err != nil {
		t.Fatal(err)
	}
	tb := b.Table()
	for k := range 2000 {
		key := fmt.Sprintf("k%d", k)
		d := tb.Route(key, "", now)
		live := slices.DeleteFunc(tb.PreferenceList(nil, key, -1), func(s string) bool { return s == "inst2" })
		if !d.Fallback || name(d.Owner) != live[0] || name(d.Replica) != live[1] {
			t.Fatalf("%s: %+v (owner %s, replica %s), live list %v", key, d, name(d.Owner), name(d.Replica), live)
		}
	}
	// One period later f = 0.1 and a tenth of the keys are admitted.
	admitted := 0
	for k := range 10_000 {
		if !tb.Route(fmt.Sprintf("k%d", k), "", now.Add(time.Minute)).Fallback {
			admitted++
		}
	}
	if admitted < 800 || admitted > 1200 {
		t.Errorf("f = 0.1 admitted %d of 10000 keys", admitted)
	}
}

func TestStates(t *testing.T) {
	p := loadfactor.Params{Start: 0.5, Increase: 0.5, Period: time.Minute}
	b := mustBalancer(t, instances(3), p)
	now := epoch()
	state := func(n string) (State, float64) {
		for _, s := range b.Table().Status(now) {
			if s.Instance.Name == n {
				return s.State, s.Factor
			}
		}
		t.Fatalf("%s not in status", n)
		return 0, 0
	}
	expect := func(step, n string, st State, f float64) {
		t.Helper()
		if got, gf := state(n); got != st || math.Abs(gf-f) > 1e-9 {
			t.Errorf("%s: %s is %s at f %v, want %s at %v", step, n, got, gf, st, f)
		}
	}
	expect("start", "inst0", Up, 1)
	v := b.Table().Version()

	must(t, b.SetHealth("inst0", false, now))
	expect("health fails", "inst0", Down, 0)
	must(t, b.SetHealth("inst0", false, now))
	if got := b.Table().Version(); got != v+1 {
		t.Errorf("version %d after one change and a repeat, want %d", got, v+1)
	}
	must(t, b.SetHealth("inst0", true, now))
	expect("health returns", "inst0", Ramping, 0.5)
	now = now.Add(time.Minute)
	expect("one period", "inst0", Ramping, 1)
	b.Tick(now)
	expect("tick", "inst0", Up, 1)

	must(t, b.Drain("inst1", now))
	expect("drain", "inst1", Draining, 0.5)
	now = now.Add(time.Minute)
	expect("drained", "inst1", Draining, 0)
	b.Tick(now)
	expect("tick after drain", "inst1", Disabled, 0)
	must(t, b.Enable("inst1", now))
	expect("enable", "inst1", Ramping, 0.5)

	must(t, b.Disable("inst2", now))
	expect("disable", "inst2", Disabled, 0)
	must(t, b.Drain("inst2", now))
	expect("drain a disabled instance", "inst2", Disabled, 0)
	must(t, b.Enable("inst2", now))
	must(t, b.Drain("inst2", now))
	must(t, b.SetHealth("inst2", false, now))
	expect("down while draining", "inst2", Down, 0)
	must(t, b.SetHealth("inst2", true, now))
	expect("back after a drain", "inst2", Disabled, 0)

	if err := b.Disable("nope", now); !errors.Is(err, ErrUnknownInstance) {
		t.Errorf("unknown name: %v", err)
	}
	for st, want := range map[State]string{Up: "up", Ramping: "ramping", Draining: "draining", Down: "down", Disabled: "disabled"} {
		if st.String() != want {
			t.Errorf("%d.String() = %s", st, st)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestUpdate(t *testing.T) {
	p := loadfactor.DefaultParams()
	b := mustBalancer(t, instances(4), p)
	now := epoch()
	must(t, b.SetHealth("inst1", false, now))
	hash := b.Table().hash

	// Same names and weights, other addresses and order: same hash table,
	// live state kept.
	in := instances(4)
	slices.Reverse(in)
	in[0].HTTP.Host = "example.org"
	must(t, b.Update(in, p, now))
	if b.Table().hash != hash {
		t.Error("hashing table rebuilt though names and weights did not change")
	}
	// Add inst4, drop inst3, change inst0's weight.
	in = instances(5, 50)
	in = slices.Delete(in, 3, 4)
	must(t, b.Update(in, p, now))
	states := map[string]State{}
	for _, s := range b.Table().Status(now) {
		states[s.Instance.Name] = s.State
	}
	want := map[string]State{"inst0": Up, "inst1": Down, "inst2": Up, "inst4": Ramping}
	if !maps(states, want) {
		t.Errorf("states after update %v, want %v", states, want)
	}
	if b.Table().hash == hash {
		t.Error("hashing table kept though weights changed")
	}
	if err := b.Update(instances(2), loadfactor.Params{}, now); err == nil {
		t.Error("update with invalid load factor accepted")
	}
}

func maps(a, b map[string]State) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestRouteDoesNotAllocate holds for every kind of instance state.
func TestRouteDoesNotAllocate(t *testing.T) {
	b := mustBalancer(t, instances(20), loadfactor.DefaultParams())
	now := epoch()
	must(t, b.SetHealth("inst3", false, now))
	must(t, b.SetHealth("inst4", false, now))
	must(t, b.SetHealth("inst4", true, now))
	must(t, b.Drain("inst5", now))
	keys := make([]string, 256)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	k := 0
	if allocs := testing.AllocsPerRun(1000, func() {
		b.Route(keys[k%len(keys)], "inst3", now)
		k++
	}); allocs != 0 {
		t.Errorf("Route allocates %v times per call", allocs)
	}
}

// TestConcurrentRouteAndChanges: requests route while the writer changes
// state; every decision is whole. Run with -race.
func TestConcurrentRouteAndChanges(t *testing.T) {
	b := mustBalancer(t, instances(8), loadfactor.DefaultParams())
	now := epoch()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				d := b.Route(fmt.Sprintf("g%d-%d", g, k), "", now)
				if d.Owner == nil || d.Replica == d.Owner {
					t.Errorf("decision %+v", d)
					return
				}
			}
		})
	}
	for i := range 200 {
		n := fmt.Sprintf("inst%d", i%7)
		must(t, b.SetHealth(n, i%2 == 1, now))
		must(t, b.Drain("inst7", now))
		must(t, b.Enable("inst7", now))
	}
	close(stop)
	wg.Wait()
}

// TestRouteForProtocol: SIP keys go only to instances with a SIP address,
// HTTP keys only to those with an HTTP address, and a key whose owner speaks
// both has that owner for both.
func TestRouteForProtocol(t *testing.T) {
	in := instances(6)
	for i := range in {
		if i != 1 {
			in[i].SIP = config.SIPAddr{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1", Port: 5070 + i}}
		}
		if i != 2 {
			in[i].HTTP = config.HTTPAddr{Endpoint: config.Endpoint{Transport: "http", Host: "127.0.0.1", Port: 8080 + i}}
		}
	}
	b := mustBalancer(t, in, loadfactor.DefaultParams())
	now := epoch()
	tb := b.Table()
	same := 0
	for k := range 3000 {
		key := fmt.Sprintf("user-%d", k)
		any, sip, http := tb.Route(key, "", now), tb.RouteFor(SIP, key, "", now), tb.RouteFor(HTTP, key, "", now)
		if name(sip.Owner) == "inst1" || name(sip.Replica) == "inst1" {
			t.Fatalf("%s: SIP routed to inst1, which has no SIP address", key)
		}
		if name(http.Owner) == "inst2" || name(http.Replica) == "inst2" {
			t.Fatalf("%s: HTTP routed to inst2, which has no HTTP address", key)
		}
		if o := name(any.Owner); o != "inst1" && o != "inst2" {
			if name(sip.Owner) != o || name(http.Owner) != o {
				t.Fatalf("%s: owner %s, SIP owner %s, HTTP owner %s", key, o, name(sip.Owner), name(http.Owner))
			}
			same++
		}
	}
	if same < 1500 {
		t.Errorf("only %d of 3000 keys owned by an instance that speaks both", same)
	}
}

// TestRouteWithout: the retry decision is the one the balancer would make
// with the failed instance down, naming it as Previous.
func TestRouteWithout(t *testing.T) {
	b := mustBalancer(t, instances(5), loadfactor.DefaultParams())
	now := epoch()
	for k := range 500 {
		key := fmt.Sprintf("k%d", k)
		d := b.Table().Route(key, "", now)
		retry := b.Table().RouteWithout(AnyProtocol, key, d.Owner.Name, now)
		must(t, b.SetHealth(d.Owner.Name, false, now))
		down := b.Table().Route(key, d.Owner.Name, now)
		must(t, b.SetHealth(d.Owner.Name, true, now.Add(-time.Hour)))
		if retry.Owner != down.Owner || retry.Replica != down.Replica || name(retry.Previous) != d.Owner.Name || !retry.Repaired {
			t.Fatalf("%s: retry %+v, with the owner down %+v", key, retry, down)
		}
		if retry.Owner != d.Replica {
			t.Fatalf("%s: retry goes to %s, not the replica partner %s", key, name(retry.Owner), name(d.Replica))
		}
	}
}

// TestTransitionsObserved: every change of state is heard once, and Changed
// is closed by each new Table.
func TestTransitionsObserved(t *testing.T) {
	b := mustBalancer(t, instances(3), loadfactor.Params{Start: 0.5, Increase: 0.5, Period: time.Minute})
	var got []string
	b.Observe(func(tr Transition) {
		got = append(got, fmt.Sprintf("%s %s->%s %v %v", tr.Name, tr.From, tr.To, tr.Added, tr.Removed))
	})
	now := epoch()
	changed := b.Changed()
	must(t, b.SetHealth("inst1", false, now))
	select {
	case <-changed:
	default:
		t.Error("Changed not closed by a new Table")
	}
	must(t, b.SetHealth("inst1", false, now)) // no change, no Table
	must(t, b.SetHealth("inst1", true, now))
	b.Tick(now.Add(time.Minute))
	must(t, b.Update(append(instances(2), config.Instance{Name: "new", Weight: 100}), loadfactor.DefaultParams(), now))
	want := []string{
		"inst1 up->down false false",
		"inst1 down->ramping false false",
		"inst1 ramping->up false false",
		"new up->ramping true false",
		"inst2 up->up false true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("transitions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestRoutedShares: the sampled shares are what routing the sample keys at
// now gives, through a ramp that steps and a drain; within one step of the
// ramps a Table samples once.
func TestRoutedShares(t *testing.T) {
	p := loadfactor.DefaultParams()
	b := mustBalancer(t, instances(4), p)
	now := epoch()
	must(t, b.SetHealth("inst1", false, now))
	must(t, b.SetHealth("inst1", true, now)) // ramps up from 0.1, a step per 10 s
	must(t, b.Drain("inst2", now))           // 0.9 down, a step per 10 s
	must(t, b.Disable("inst3", now))
	tb := b.Table()
	sample := func(at time.Time) []float64 {
		owned := map[string]int{}
		for i := range uint64(ShareSamples) {
			if d := tb.RouteHash(hashing.Mix(i), "", at); d.Owner != nil {
				owned[d.Owner.Name]++
			}
		}
		var out []float64
		for _, s := range tb.Status(at) {
			out = append(out, float64(owned[s.Instance.Name])/ShareSamples)
		}
		return out
	}
	var prev *routedShares
	for k := range 24 { // two calls per step, past both ramps' ends
		at := now.Add(time.Duration(k) * 5 * time.Second)
		got, want := tb.RoutedShares(at), sample(at)
		if !slices.Equal(got, want) {
			t.Fatalf("at +%v: RoutedShares %v, sampled %v", at.Sub(now), got, want)
		}
		if cached := tb.routed.Load(); k%2 == 1 && cached != prev {
			t.Errorf("at +%v: sampled again within a step", at.Sub(now))
		} else {
			prev = cached
		}
		if got[3] != 0 {
			t.Errorf("at +%v: disabled inst3 routed %v", at.Sub(now), got[3])
		}
	}
	if got := tb.RoutedShares(now.Add(time.Hour)); got[1] < 0.2 || got[2] != 0 {
		t.Errorf("after the ramps: %v, want inst1 at its full share and inst2 at 0", got)
	}
}

// TestUpdateBuildsOutsideTheLock: while a reload at N = 1000 builds its
// hashing table (held there by a hook), Route, a health transition and an
// admin action complete, and Update does not; the Table it then publishes
// keeps what they changed.
func TestUpdateBuildsOutsideTheLock(t *testing.T) {
	if testing.Short() {
		t.Skip("two hashing builds at N = 1000")
	}
	p := loadfactor.DefaultParams()
	in := instances(1000)
	b := mustBalancer(t, in, p)
	now := epoch()
	started, release := make(chan struct{}), make(chan struct{})
	b.buildStarted = func() { close(started); <-release }
	more := append(slices.Clone(in), config.Instance{Name: "extra", Weight: 100})
	updated := make(chan error, 1)
	go func() { updated <- b.Update(more, p, now) }()
	<-started

	// Update is inside its build: none of these may wait for it.
	must(t, b.SetHealth("inst7", false, now))
	must(t, b.Drain("inst8", now))
	for k := range 1000 {
		if d := b.Route(fmt.Sprint("key-", k), "", now); d.Owner == nil || d.Owner.Name == "inst7" {
			t.Fatalf("key-%d: owner %s while inst7 is down", k, name(d.Owner))
		}
	}
	if st := b.Table().Status(now); st[7].State != Down || st[8].State != Draining || len(st) != 1000 {
		t.Errorf("during the build: inst7 %s, inst8 %s, %d instances", st[7].State, st[8].State, len(st))
	}
	select {
	case err := <-updated:
		t.Fatalf("Update returned while its build was held: %v", err)
	default:
	}

	close(release)
	must(t, <-updated)
	st := b.Table().Status(now)
	if len(st) != 1001 || st[1000].Instance.Name != "extra" || st[1000].State != Ramping {
		t.Fatalf("after the update: %d instances, last %+v", len(st), st[len(st)-1])
	}
	if st[7].State != Down || st[8].State != Draining {
		t.Errorf("after the update: inst7 %s, inst8 %s; the changes made during the build are lost", st[7].State, st[8].State)
	}
}
