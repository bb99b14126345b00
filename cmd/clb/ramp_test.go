package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"clb/admin"
)

// webInstance is an HTTP back end that can be stopped and started again on
// its port; it names itself and the replica partner clb told it of.
type webInstance struct {
	t    *testing.T
	name string
	addr string
	srv  *http.Server
	done chan struct{}
}

func newWebInstance(t *testing.T, name string) *webInstance {
	w := &webInstance{t: t, name: name, addr: "127.0.0.1:0"}
	w.start()
	t.Cleanup(w.stop)
	return w
}

func (w *webInstance) start() {
	ln, err := net.Listen("tcp", w.addr)
	if err != nil {
		w.t.Fatal(err)
	}
	w.addr = ln.Addr().String()
	w.srv = &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("X-Served-By", w.name)
		rw.Header().Set("X-Told-Replica", r.Header.Get("X-CLB-Replica"))
	})}
	w.done = make(chan struct{})
	go func() { _ = w.srv.Serve(ln); close(w.done) }()
}

func (w *webInstance) stop() {
	if w.srv != nil {
		w.srv.Close()
		<-w.done
		w.srv = nil
	}
}

// session is a key clb minted, with the cookies that carry it.
type session struct {
	cookies []*http.Cookie
	owner   string
	replica string // the replica partner clb named
}

// newSessions sends n requests without cookies through clb, so that each gets
// a new key, and returns them.
func newSessions(t *testing.T, httpAddr string, n int) []session {
	t.Helper()
	out := make([]session, n)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for i := w; i < n; i += 4 {
				res, err := client.Get("http://" + httpAddr + "/new")
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				out[i] = session{cookies: res.Cookies(), owner: res.Header.Get("X-Served-By"), replica: res.Header.Get("X-Told-Replica")}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

// revisit sends a request of each session and returns who served it.
func revisit(t *testing.T, httpAddr string, ss []session) []string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	out := make([]string, len(ss))
	for i, s := range ss {
		req, _ := http.NewRequest("GET", "http://"+httpAddr+"/again", nil)
		for _, c := range s.cookies {
			req.AddCookie(c)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		out[i] = res.Header.Get("X-Served-By")
	}
	return out
}

func share(ss []session, name string) float64 {
	n := 0
	for _, s := range ss {
		if s.owner == name {
			n++
		}
	}
	return float64(n) / float64(len(ss))
}

// watch long-polls the status and hands each answer to f until f says stop.
func watch(t *testing.T, adminAddr string, deadline time.Duration, f func(admin.Status) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var st admin.Status
	adminCall(t, adminAddr, "GET", "/api/v1/status", &st)
	for !f(st) {
		if ctx.Err() != nil {
			t.Fatalf("status did not get there within %v: %+v", deadline, st)
		}
		adminCall(t, adminAddr, "GET", fmt.Sprintf("/api/v1/status?wait=5s&version=%d", st.Version), &st)
	}
}

// step is one load factor seen while b ramped, and the share of new keys it
// took at it (-1 when the sample straddled a step and was dropped).
type step struct {
	state  string
	factor float64
	share  float64
}

// sampleSteps follows b's ramp through the status until done says it is
// over; at each factor it routes a batch of new sessions and keeps their
// share if the factor held for the whole batch.
func sampleSteps(t *testing.T, adminAddr, httpAddr string, done func(admin.InstanceStatus) bool) []step {
	var steps []step
	watch(t, adminAddr, 60*time.Second, func(st admin.Status) bool {
		b := byName(st, "b")
		if len(steps) > 0 && steps[len(steps)-1].factor == b.LoadFactor && steps[len(steps)-1].state == b.State {
			return done(b)
		}
		s := step{state: b.State, factor: b.LoadFactor, share: -1}
		if b.NextStep != nil {
			ss := newSessions(t, httpAddr, batch)
			if time.Now().Before(*b.NextStep) {
				s.share = share(ss, "b")
			}
		}
		steps = append(steps, s)
		return done(b)
	})
	return steps
}

// distinctFactors are the factors of steps, each once (a state change at the
// same factor, such as ramping at 1 becoming up, is a step of its own).
func distinctFactors(steps []step) []float64 {
	var out []float64
	for _, s := range steps {
		if len(out) == 0 || out[len(out)-1] != s.factor {
			out = append(out, s.factor)
		}
	}
	return out
}

func byName(st admin.Status, name string) admin.InstanceStatus {
	for _, i := range st.Instances {
		if i.Name == name {
			return i
		}
	}
	return admin.InstanceStatus{}
}

// batch is how many new keys a share is measured over: its standard error is
// then at most 1.5 points.
const batch = 1000

// checkShares: at each sampled step b's share of new keys is its factor times
// its full share, within four standard errors, and the shares move the way
// the factors do.
func checkShares(t *testing.T, steps []step, full float64, rising bool) {
	t.Helper()
	measured, last := 0, -1.0
	for _, s := range steps {
		if s.share < 0 {
			continue
		}
		measured++
		want := s.factor * full
		if tol := 4 * math.Sqrt(want*(1-want)/batch); math.Abs(s.share-want) > tol+0.005 {
			t.Errorf("at factor %.2f b took %.3f of new keys, want %.3f ± %.3f", s.factor, s.share, want, tol)
		}
		if last >= 0 && (rising && s.share <= last || !rising && s.share >= last) {
			t.Errorf("b's share went %.3f → %.3f, against its ramp", last, s.share)
		}
		last = s.share
	}
	if measured < 2 {
		t.Errorf("only %d steps measured: %+v", measured, steps)
	}
}

// TestRampEndToEnd: with a real clb process and three back ends, one is
// stopped and started again: the status shows it down, then its load factor
// rising in steps, with the share of new keys routed to it following the
// factor; draining it moves its keys to their replica partners a slice at a
// time and ends with it serving none.
func TestRampEndToEnd(t *testing.T) {
	a, b, c := newWebInstance(t, "a"), newWebInstance(t, "b"), newWebInstance(t, "c")
	path := writeFile(t, fmt.Sprintf(`listen: {http: 127.0.0.1:0, admin: 127.0.0.1:0}
health: {interval: 100ms, timeout: 100ms, rise: 1, fall: 2}
loadfactor: {start: 0.25, increase: 0.25, period: 3s}
instances:
  - {name: a, http: http://%s}
  - {name: b, http: http://%s}
  - {name: c, http: http://%s}
`, a.addr, b.addr, c.addr))
	p := startCLB(t, path)
	httpAddr, adminAddr := p.started["http"].(string), p.started["admin"].(string)

	var full float64
	watch(t, adminAddr, 10*time.Second, func(st admin.Status) bool {
		full = byName(st, "b").FullShare
		return byName(st, "b").State == "up"
	})

	b.stop()
	killed := time.Now()
	watch(t, adminAddr, 10*time.Second, func(st admin.Status) bool { return byName(st, "b").State == "down" })
	t.Logf("b down %v after it stopped", time.Since(killed).Round(time.Millisecond))
	if sh := share(newSessions(t, httpAddr, 200), "b"); sh != 0 {
		t.Errorf("b down took %.3f of new keys", sh)
	}

	b.start()
	up := sampleSteps(t, adminAddr, httpAddr, func(b admin.InstanceStatus) bool { return b.State == "up" })
	t.Logf("ramp up: %+v", up)
	factors := distinctFactors(up)
	if fmt.Sprint(factors) != "[0 0.25 0.5 0.75 1]" && fmt.Sprint(factors) != "[0.25 0.5 0.75 1]" {
		t.Errorf("b's factors on the way up %v, want 0.25 0.5 0.75 1", factors)
	}
	checkShares(t, up, full, true)

	// b owns its full share again; keep the sessions it owns and the replica
	// partner clb named for each.
	var mine []session
	for _, s := range newSessions(t, httpAddr, batch) {
		if s.owner == "b" {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 {
		t.Fatal("b owns no keys after its ramp")
	}

	if code, body := adminCall(t, adminAddr, "POST", "/api/v1/instances/b/drain", nil); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	moved := []float64{}
	down := sampleSteps(t, adminAddr, httpAddr, func(bs admin.InstanceStatus) bool {
		// A slice at a time: the share of b's sessions gone to their
		// replica partners, at each step.
		n := 0
		for i, who := range revisit(t, httpAddr, mine) {
			if who != "b" {
				n++
				if who != mine[i].replica {
					t.Errorf("a session of b went to %s, not its replica partner %s", who, mine[i].replica)
				}
			}
		}
		moved = append(moved, float64(n)/float64(len(mine)))
		return bs.State == "disabled"
	})
	t.Logf("drain: %+v; share of b's sessions moved %v", down, moved)
	factors = distinctFactors(down)
	if fmt.Sprint(factors) != "[0.75 0.5 0.25 0]" {
		t.Errorf("b's factors on the way down %v, want 0.75 0.5 0.25 0", factors)
	}
	checkShares(t, down, full, false)
	for i := 1; i < len(moved); i++ {
		if moved[i] < moved[i-1] {
			t.Errorf("sessions moved back to b: %v", moved)
		}
	}
	if moved[len(moved)-1] != 1 || moved[0] == 1 {
		t.Errorf("share of b's sessions moved at each step %v: want a slice at a time, all at the end", moved)
	}
	if sh := share(newSessions(t, httpAddr, batch), "b"); sh != 0 {
		t.Errorf("drained b took %.3f of new keys", sh)
	}
	p.signal(os.Interrupt)
	if err := p.exit(); err != nil {
		t.Errorf("exit: %v", err)
	}
}
