package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"clb/admin"
	"clb/instance"
)

// The end-to-end tests of the failover promise: clb in this process, sample
// instances as processes of their own (this test binary run as clb
// instance), killed with SIGKILL and started again.

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

// killAndReturn kills the instance name with SIGKILL, waits for clb to mark
// it down, starts it again and waits for it to be up (its ramp done). It
// returns when it was killed and how long after that it was down and up.
func (c *cluster) killAndReturn(t *testing.T, name string) (killed time.Time, down, up time.Duration) {
	t.Helper()
	was := c.started(name)
	if err := c.kill(name); err != nil {
		t.Fatal(err)
	}
	killed = time.Now()
	c.waitState(t, name, "down", 10*time.Second)
	down = time.Since(killed)
	if err := c.restart(name, was); err != nil {
		t.Fatal(err)
	}
	c.waitState(t, name, "up", 20*time.Second)
	return killed, down, time.Since(killed)
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
	c := startTestCluster(t, fastYAML, "inst1", "inst2", "inst3", "inst4")
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
	killed, down, rampedAt := c.killAndReturn(t, victim)
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

// webSession is one HTTP session of a test: a counter it increments with
// PUT /counter?next=N, which the instance applies once.
type webSession struct {
	client  *http.Client
	counter int64    // the last value acknowledged
	served  []string // who answered, in order, runs collapsed
	lost    string   // why the session's state was lost, if it was
	retries int      // requests sent again after a 5xx or a transport error
	query   string   // more query parameters, "&user=u1"
	node    int      // the base URL it sends to, an index of increment's
	moves   int      // times it moved to another base URL
}

// increment sends the next increment, again on a 5xx or a transport error
// (a client's retry; PUT is idempotent), and checks the answer. With
// several base URLs (clb nodes) it sends to one and, on a transport error,
// moves to the next, as a client reconnects to another address of a name.
func (s *webSession) increment(bases ...string) {
	next := s.counter + 1
	for attempt := 0; attempt < 5; attempt++ {
		base := bases[s.node%len(bases)]
		req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/counter?next=%d%s", base, next, s.query), nil)
		res, err := s.client.Do(req)
		if err != nil {
			s.retries++
			if len(bases) > 1 {
				s.node++
				s.moves++
			}
			continue
		}
		var got instance.Counter
		err = json.NewDecoder(res.Body).Decode(&got)
		res.Body.Close()
		if res.StatusCode >= 500 {
			s.retries++
			continue
		}
		by := res.Header.Get("X-CLB-Served-By")
		if n := len(s.served); n == 0 || s.served[n-1] != by {
			s.served = append(s.served, by)
		}
		if res.StatusCode != 200 || err != nil || got.Counter != next {
			s.lost = fmt.Sprintf("PUT next=%d: %d, counter %d, from %s", next, res.StatusCode, got.Counter, by)
			return
		}
		s.counter = next
		return
	}
	s.lost = fmt.Sprintf("PUT next=%d: no answer after 5 attempts", next)
}

// webLoad runs sessions, each incrementing its counter every period, until
// stop is closed.
func webLoad(base string, n int, period time.Duration, stop <-chan struct{}) *load {
	return webLoadAcross([]string{base}, n, period, stop)
}

// webLoadAcross is webLoad through several clb nodes: session i starts on
// bases[i % len(bases)].
func webLoadAcross(bases []string, n int, period time.Duration, stop <-chan struct{}) *load {
	transport := &http.Transport{MaxIdleConnsPerHost: n, IdleConnTimeout: 30 * time.Second}
	l := newLoad(n)
	var wg sync.WaitGroup
	for i := range n {
		jar, _ := cookiejar.New(nil)
		s := &webSession{client: &http.Client{Jar: jar, Transport: transport, Timeout: 10 * time.Second}, node: i}
		l.sessions = append(l.sessions, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer l.step(i, true)
			// Spread the sessions over the period (the load's pacing).
			tick := time.NewTicker(period)
			defer tick.Stop()
			time.Sleep(time.Duration(i) * period / time.Duration(n))
			for s.lost == "" {
				s.increment(bases...)
				l.step(i, false)
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	l.done = func() { wg.Wait(); transport.CloseIdleConnections() }
	return l
}

// load is webLoad's sessions and their progress.
type load struct {
	sessions []*webSession
	done     func() // waits for the sessions to stop, once stop is closed

	mu     sync.Mutex
	cond   *sync.Cond
	rounds []int  // requests made, by session
	ended  []bool // the session stopped (stop closed, or its state lost)
}

func newLoad(n int) *load {
	l := &load{rounds: make([]int, n), ended: make([]bool, n)}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func (l *load) step(i int, ended bool) {
	l.mu.Lock()
	if ended {
		l.ended[i] = true
	} else {
		l.rounds[i]++
	}
	l.mu.Unlock()
	l.cond.Broadcast()
}

// await returns once every session still running has made k more requests.
func (l *load) await(t *testing.T, k int) {
	t.Helper()
	reached := make(chan struct{})
	go func() {
		l.mu.Lock()
		want := make([]int, len(l.rounds))
		for i, r := range l.rounds {
			want[i] = r + k
		}
		for i := 0; i < len(want); {
			if l.ended[i] || l.rounds[i] >= want[i] {
				i++
				continue
			}
			l.cond.Wait()
		}
		l.mu.Unlock()
		close(reached)
	}()
	select {
	case <-reached:
	case <-time.After(60 * time.Second):
		t.Fatalf("the sessions did not make %d more requests within 60 s", k)
	}
}

// TestHTTPSessionsSurviveKill: 500 sessions increment their counters in a
// loop; one instance is killed with SIGKILL and started again; every
// session's counter goes up by one at each step, with no reset and no gap.
func TestHTTPSessionsSurviveKill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	c := startTestCluster(t, fastYAML, "inst1", "inst2", "inst3", "inst4")
	const victim = "inst3"
	stop := make(chan struct{})
	l := webLoad("http://"+c.http, 500, 250*time.Millisecond, stop)
	l.await(t, 4) // every session served a few times
	_, down, ramp := c.killAndReturn(t, victim)
	l.await(t, 4) // and a few more once the victim is back
	close(stop)
	l.done()
	sessions := l.sessions

	var lost, retries, moved, home int
	var total int64
	for _, s := range sessions {
		total += s.counter
		retries += s.retries
		if s.lost != "" {
			lost++
			if lost <= 5 {
				t.Errorf("a session lost its state: %s (served by %v)", s.lost, s.served)
			}
		}
		if len(s.served) > 1 && s.served[0] == victim {
			moved++
			if s.served[len(s.served)-1] == victim {
				home++
			}
		}
	}
	t.Logf("%d sessions, %d increments acknowledged, %d lost; %s down %v after SIGKILL, up again %v after; "+
		"%d of its sessions moved to their partners, %d of them back home; %d requests sent again by clients",
		len(sessions), total, lost, victim, down.Round(time.Millisecond), ramp.Round(time.Millisecond), moved, home, retries)
	if lost != 0 {
		t.Errorf("%d of %d sessions lost", lost, len(sessions))
	}
	if moved == 0 || home == 0 {
		t.Errorf("%d sessions moved and %d came home: the test proved nothing", moved, home)
	}
}

// TestConvergedFailover: each user's SIP dialog and HTTP session land on one
// instance; when it is killed, both go on together on one other instance,
// with the dialog and the counter intact.
func TestConvergedFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	c := startTestCluster(t, demoYAML, "inst1", "inst2", "inst3", "inst4")
	ph, err := newPhone(c.sip)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.close()
	ctx := context.Background()
	const users = 24
	type user struct {
		name  string
		call  *call
		web   *webSession
		where string
	}
	var us []*user
	perInstance := map[string]int{}
	for i := range users {
		u := &user{name: fmt.Sprintf("u%d", i), call: ph.newCall(fmt.Sprintf("u%d", i)),
			web: &webSession{client: &http.Client{Timeout: 10 * time.Second}, query: fmt.Sprintf("&user=u%d", i)}}
		if x := u.call.invite(ctx); !x.ok() {
			t.Fatalf("INVITE of %s: %+v", u.name, x)
		}
		u.web.increment("http://" + c.http)
		if u.web.lost != "" {
			t.Fatalf("%s: %s", u.name, u.web.lost)
		}
		u.where = u.call.servedBy
		if u.web.served[0] != u.where {
			t.Errorf("%s: dialog on %s, web session on %s", u.name, u.where, u.web.served[0])
		}
		perInstance[u.where]++
		us = append(us, u)
	}
	// Kill the instance with the most users.
	victim := ""
	for name, n := range perInstance {
		if victim == "" || n > perInstance[victim] || n == perInstance[victim] && name < victim {
			victim = name
		}
	}
	if err := c.kill(victim); err != nil {
		t.Fatal(err)
	}
	c.waitState(t, victim, "down", 10*time.Second)

	moved := 0
	for _, u := range us {
		x := u.call.reinvite(ctx)
		u.web.increment("http://" + c.http)
		web := u.web.served[len(u.web.served)-1]
		switch {
		case !x.ok() || u.web.lost != "":
			t.Errorf("%s: re-INVITE %d, web %q", u.name, x.code, u.web.lost)
		case x.servedBy != web:
			t.Errorf("%s: after the kill the dialog is on %s, the web session on %s", u.name, x.servedBy, web)
		case u.where == victim:
			moved++
			if x.servedBy == victim {
				t.Errorf("%s still on %s", u.name, victim)
			}
			if want := c.route(t, "user:"+u.name).Owner; x.servedBy != want {
				t.Errorf("%s on %s, clb's owner %s", u.name, x.servedBy, want)
			}
		case x.servedBy != u.where:
			t.Errorf("%s moved from %s to %s though %s was killed", u.name, u.where, x.servedBy, victim)
		}
		if u.web.counter != 2 {
			t.Errorf("%s: counter %d after two increments", u.name, u.web.counter)
		}
		if x := u.call.bye(ctx); !x.ok() || x.servedBy != u.web.served[len(u.web.served)-1] {
			t.Errorf("%s: BYE %d from %s", u.name, x.code, x.servedBy)
		}
	}
	t.Logf("%d users, %d on %s moved together to their partners with dialog and counter", users, moved, victim)
	if moved == 0 {
		t.Error("no user was on the killed instance")
	}
}

// TestDrainLosesNothing: under the same HTTP load and with SIP dialogs open,
// draining an instance moves its sessions to their replica partners a slice
// at a time, loses none, and ends with it serving no key.
func TestDrainLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	c := startTestCluster(t, fastYAML, "inst1", "inst2", "inst3", "inst4")
	const victim = "inst1"
	ph, err := newPhone(c.sip)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.close()
	ctx := context.Background()
	var calls []*call
	for i := range 40 {
		cl := ph.newCall(fmt.Sprintf("d%d", i))
		if x := cl.invite(ctx); !x.ok() {
			t.Fatalf("INVITE: %+v", x)
		}
		calls = append(calls, cl)
	}
	stop := make(chan struct{})
	l := webLoad("http://"+c.http, 200, 250*time.Millisecond, stop)
	l.await(t, 2) // every session served
	adminAddr := c.admin[len("http://"):]
	if code, body := adminCall(t, adminAddr, "POST", "/api/v1/instances/"+victim+"/drain", nil); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	var factors []float64
	watch(t, adminAddr, 30*time.Second, func(st admin.Status) bool {
		b := byName(st, victim)
		if n := len(factors); n == 0 || factors[n-1] != b.LoadFactor {
			factors = append(factors, b.LoadFactor)
		}
		return b.State == "disabled"
	})
	drained := time.Now()
	l.await(t, 4) // more load after the drain
	close(stop)
	l.done()
	sessions := l.sessions

	lost, moved, after := 0, 0, 0
	for _, s := range sessions {
		if s.lost != "" {
			lost++
			t.Errorf("a session lost its state: %s", s.lost)
		}
		if len(s.served) == 0 { // it failed before (it used to panic here)
			t.Errorf("a session was never served")
			continue
		}
		if len(s.served) > 1 && s.served[0] == victim {
			moved++
		}
		if s.served[len(s.served)-1] == victim {
			after++
		}
	}
	var st admin.Status
	adminCall(t, adminAddr, "GET", "/api/v1/status", &st)
	if v := byName(st, victim); v.Share != 0 || v.State != "disabled" {
		t.Errorf("%s after the drain: %+v", victim, v)
	}
	byes := 0
	for _, cl := range calls {
		if x := cl.bye(ctx); x.ok() && x.servedBy != victim {
			byes++
		} else {
			t.Errorf("BYE of %s: %d from %s", cl.user, x.code, x.servedBy)
		}
	}
	t.Logf("drain of %s: factors %v; %d sessions moved, %d lost, %d still on it after %v; %d of %d dialogs ended elsewhere with 200",
		victim, factors, moved, lost, after, time.Since(drained).Round(time.Millisecond), byes, len(calls))
	if fmt.Sprint(factors) != "[1 0.75 0.5 0.25 0]" && fmt.Sprint(factors) != "[0.75 0.5 0.25 0]" {
		t.Errorf("drain factors %v, want a slice at a time", factors)
	}
	if moved == 0 || after != 0 {
		t.Errorf("%d sessions moved, %d still served by %s", moved, after, victim)
	}
}
