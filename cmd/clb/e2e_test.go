package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"clb/admin"
)

// The end-to-end tests of the failover promise: clb in this process, sample
// instances as processes of their own (this test binary run as clb
// instance), killed with SIGKILL and started again.

const e2eYAML = `health: {interval: 250ms, timeout: 250ms, rise: 2, fall: 2}
loadfactor: {start: 0.25, increase: 0.25, period: 1s}
`

func startTestCluster(t *testing.T, yaml string, names ...string) *cluster {
	t.Helper()
	c, err := startCluster(clusterOptions{
		names: names,
		exe:   os.Args[0],
		env:   []string{"CLB_TEST_MAIN=1"},
		yaml:  yaml,
	}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.close(); err != nil {
			t.Errorf("cluster: %v", err)
		}
	})
	return c
}

// route is clb's answer for key now.
func (c *cluster) route(t *testing.T, key string) admin.Route {
	t.Helper()
	var r admin.Route
	if code, body := adminCall(t, c.admin[len("http://"):], "GET", "/api/v1/route?key="+url.QueryEscape(key), &r); code != 200 {
		t.Fatalf("route: %d %s", code, body)
	}
	return r
}

// waitState long-polls clb's status until instance name is in state.
func (c *cluster) waitState(t *testing.T, name, state string, within time.Duration) {
	t.Helper()
	watch(t, c.admin[len("http://"):], within, func(st admin.Status) bool { return byName(st, name).State == state })
}

// dialogRecord is what the test saw of one dialog.
type dialogRecord struct {
	call    *call
	home    string // the instance that answered the INVITE
	replica string // its replica partner then
	xs      []exchange
	methods []string
}

// TestSIPDialogsSurviveKill: 200 dialogs of 20–28 s through clb to four
// instances over UDP; one instance is killed mid-way by SIGKILL and started
// again. The re-INVITEs and BYEs of its dialogs reach their replica
// partners, which answer from the replicated state; failed transactions are
// at most those in flight on the killed instance at the kill; after the
// ramp every dialog ends with 200 to its BYE.
func TestSIPDialogsSurviveKill(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s end-to-end run")
	}
	c := startTestCluster(t, e2eYAML, "inst1", "inst2", "inst3", "inst4")
	ph, err := newPhone(c.sip)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.close()

	const dialogs = 200
	const victim = "inst2"
	start := time.Now()
	ctx := context.Background()
	recs := make([]*dialogRecord, dialogs)
	var wg, setup sync.WaitGroup
	var mu sync.Mutex // guards the records' exchanges
	// at runs f at start+d, without sleeping past the end of the test.
	at := func(d time.Duration, f func()) {
		time.Sleep(time.Until(start.Add(d)))
		f()
	}
	for i := range dialogs {
		r := &dialogRecord{call: ph.newCall(fmt.Sprintf("u%d", i))}
		recs[i] = r
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		jitter := func(d time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(d))) }
		offset := time.Duration(i) * 10 * time.Millisecond
		wg.Add(1)
		setup.Add(1)
		go func() {
			defer wg.Done()
			record := func(method string, x exchange) {
				mu.Lock()
				r.xs, r.methods = append(r.xs, x), append(r.methods, method)
				mu.Unlock()
			}
			at(offset, func() {
				x := r.call.invite(ctx)
				r.home = x.servedBy
				record("INVITE", x)
				setup.Done()
			})
			if r.home == "" {
				return
			}
			at(offset+6*time.Second+jitter(2*time.Second), func() { record("re-INVITE", r.call.reinvite(ctx)) })
			at(offset+13*time.Second+jitter(2*time.Second), func() { record("re-INVITE", r.call.reinvite(ctx)) })
			at(offset+20*time.Second+jitter(6*time.Second), func() { record("BYE", r.call.bye(ctx)) })
		}()
	}

	// Each dialog's replica partner, as clb names it with all up.
	setup.Wait()
	mu.Lock()
	for _, r := range recs {
		if r.home != "" {
			r.replica = c.route(t, r.call.fromTag+r.call.callID).Replica
		}
	}
	mu.Unlock()

	// Kill in the middle of the first wave of re-INVITEs (the scenario's
	// clock, not a wait for something).
	time.Sleep(time.Until(start.Add(7 * time.Second)))
	was := c.started(victim)
	if err := c.kill(victim); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	c.waitState(t, victim, "down", 10*time.Second)
	down := time.Since(killed)
	if err := c.restart(victim, was); err != nil {
		t.Fatal(err)
	}
	c.waitState(t, victim, "up", 20*time.Second)
	rampedAt := time.Since(killed)
	wg.Wait()

	var alive, victims, failed, inFlight, rerouted, home, byes int
	firstReroute := time.Duration(-1)
	for _, r := range recs {
		if r.home == "" {
			t.Errorf("dialog %s: INVITE failed: %+v", r.call.user, r.xs)
			continue
		}
		alive++
		mine := r.home == victim
		if mine {
			victims++
		}
		for k, x := range r.xs {
			if mine && x.sent.Before(killed) && (x.answered.IsZero() || x.answered.After(killed)) {
				inFlight++
			}
			if !x.ok() {
				failed++
				t.Logf("%s %s of %s (home %s): %d from %q, sent %v after the kill", r.methods[k], r.call.callID, r.call.user,
					r.home, x.code, x.servedBy, x.sent.Sub(killed).Round(time.Millisecond))
				continue
			}
			if mine && x.sent.After(killed) && x.servedBy != victim {
				rerouted++
				if x.servedBy != r.replica {
					t.Errorf("%s of %s answered by %s, not its replica partner %s", r.methods[k], r.call.user, x.servedBy, r.replica)
				}
				if d := x.answered.Sub(killed); firstReroute < 0 || d < firstReroute {
					firstReroute = d
				}
			}
		}
		last := r.xs[len(r.xs)-1]
		if r.methods[len(r.methods)-1] == "BYE" && last.ok() {
			byes++
			if mine && last.servedBy == victim {
				home++
			}
		}
	}
	t.Logf("dialogs alive before the kill %d (%d on %s), ended with 200 to BYE %d; %s down %v after SIGKILL, "+
		"up again (ramp done) %v after; first re-routed answer %v after the kill; %d requests of its dialogs "+
		"re-routed to replica partners; %d came home after the ramp; failed %d, in flight at the kill %d",
		alive, victims, victim, byes, victim, down.Round(time.Millisecond), rampedAt.Round(time.Millisecond),
		firstReroute.Round(time.Millisecond), rerouted, home, failed, inFlight)
	if alive != dialogs || byes != dialogs {
		t.Errorf("%d of %d dialogs set up, %d ended with 200", alive, dialogs, byes)
	}
	if failed > inFlight {
		t.Errorf("%d transactions failed, more than the %d in flight on %s at the kill", failed, inFlight, victim)
	}
	if victims == 0 || rerouted == 0 {
		t.Errorf("%s had %d dialogs, %d requests re-routed: the test proved nothing", victim, victims, rerouted)
	}
	if home == 0 {
		t.Errorf("no dialog of %s ended on it after its return", victim)
	}
}
