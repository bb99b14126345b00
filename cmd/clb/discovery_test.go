package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"clb/admin"
	"clb/dnstest"
)

// srvOf are the SIP and HTTP SRV records of a backend, as target:weight.
func srvOf(target string, b *backend, weight int) []dnstest.SRV {
	return []dnstest.SRV{
		{Name: "_sip._udp.app.test", Target: target, Port: b.sip.LocalAddr().(*net.UDPAddr).Port, Weight: weight},
		{Name: "_http._tcp.app.test", Target: target, Port: b.web.Listener.Addr().(*net.TCPAddr).Port, Weight: weight},
	}
}

// startNode runs a node of the file at path until the test ends.
func startNode(t *testing.T, path string) *node {
	t.Helper()
	n := loadNode(t, path)
	t.Cleanup(runNode(t, n))
	return n
}

// runNode runs n; the function it returns stops it and waits until run
// has returned.
func runNode(t *testing.T, n *node) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- n.run(ctx, nil) }()
	return sync.OnceFunc(func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Error(err)
		}
	})
}

// until polls the status of every admin address until cond holds for
// all of them, or fails the test after within.
func until(t *testing.T, within time.Duration, what string, cond func(admin.Status) bool, admins ...string) []admin.Status {
	t.Helper()
	return untilAll(t, within, what, func(sts []admin.Status) bool {
		for _, st := range sts {
			if !cond(st) {
				return false
			}
		}
		return true
	}, admins...)
}

// untilAll polls the status of every admin address until cond holds for
// the statuses together, or fails the test after within.
func untilAll(t *testing.T, within time.Duration, what string, cond func([]admin.Status) bool, admins ...string) []admin.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		sts := make([]admin.Status, len(admins))
		for i, a := range admins {
			adminCall(t, a, "GET", "/api/v1/status", &sts[i])
		}
		if cond(sts) {
			return sts
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %+v", what, within, sts)
		}
		<-tick.C
	}
}

// TestSRVDiscoveryUnderTraffic: two clb nodes with one file and no
// instance in it, their instances from a dnsmasq's SRV records, HTTP
// traffic flowing through one and SIP through the other. A record
// re-weighted: the instance's share follows the weight; removed: it leaves
// and its keys go to their replica partners; added again: it returns on both nodes ramped from one
// moment (a whole multiple of refresh: both give it the same next step) and
// takes traffic; a DNS server that stops answering changes nothing
// (routing goes on, the status says so). The nodes' fingerprints are equal
// at each stage, and no request fails.
func TestSRVDiscoveryUnderTraffic(t *testing.T) {
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	hosts := map[string][]string{"a.test": {"127.0.0.1"}, "b.test": {"127.0.0.1"}, "c.test": {"127.0.0.1"}}
	records := func(bWeight int, withA bool) []dnstest.SRV {
		r := append(srvOf("b.test", b, bWeight), srvOf("c.test", c, 100)...)
		if withA {
			r = append(r, srvOf("a.test", a, 100)...)
		}
		return r
	}
	dns := dnstest.StartSRV(t, hosts, records(100, true))
	const refresh = time.Second
	// A ramp long enough to be seen on this loaded machine, where a
	// rebuild of the hashing table may take seconds under -race.
	path := writeFile(t, fmt.Sprintf(`listen: {sip: [udp://127.0.0.1:0], http: 127.0.0.1:0, admin: 127.0.0.1:0}
health: {active: false, interval: 1s}
loadfactor: {start: 0.5, increase: 0.5, period: 60s}
discovery: {sip: _sip._udp.app.test, http: _http._tcp.app.test, resolver: "%s", refresh: %v, resolve_timeout: 1s}
`, dns.Addr(), refresh))
	n1, n2 := startNode(t, path), startNode(t, path)
	admins := []string{n1.admin.Addr(), n2.admin.Addr()}
	const within = 20 * time.Second
	names := func(st admin.Status) string {
		var s []string
		for _, i := range st.Instances {
			s = append(s, fmt.Sprintf("%s:%d", i.Name, i.Weight))
		}
		return strings.Join(s, " ")
	}
	// Equal fingerprints: at once but for a node that has not seen the last
	// change yet (or, SPEC 11, a health verdict the other has not reached).
	agree := func(what string) {
		t.Helper()
		untilAll(t, within, what+": equal fingerprints", func(sts []admin.Status) bool {
			return sts[0].Fingerprint == sts[1].Fingerprint
		}, admins...)
	}
	for _, st := range until(t, within, "a, b and c from DNS", func(st admin.Status) bool {
		return names(st) == "a.test:100 b.test:100 c.test:100"
	}, admins...) {
		if len(st.Discovery) != 2 || !st.Discovery[0].OK || st.Discovery[0].Instances != 3 || st.Discovery[1].Protocol != "http" {
			t.Errorf("discovery status %+v", st.Discovery)
		}
	}
	agree("at start")
	// HTTP through one node, SIP through the other: both carry traffic, and
	// the loaded machine carries one load.
	trs := []*traffic{startTraffic(t, n1.http.Addr(), strings.TrimPrefix(n2.sip.Listeners()[0], "udp://"))}
	for _, tr := range trs {
		tr.await(2)
	}

	// Re-weighted: b's share follows its weight.
	dns.SetSRV(records(300, true))
	for _, st := range until(t, within, "b weighs 300", func(st admin.Status) bool { return byName(st, "b.test").Weight == 300 }, admins...) {
		if got := byName(st, "b.test").FullShare; math.Abs(got-0.6) > 0.05 {
			t.Errorf("b's share %.3f at weight 300 of 500, want about 0.6", got)
		}
	}
	agree("b re-weighted")

	// Removed: a leaves; its keys go to their replica partners.
	type route struct{ owner, replica string }
	keys := map[string]route{}
	for i := range 200 {
		var r admin.Route
		key := fmt.Sprintf("user:%d", i)
		adminCall(t, admins[0], "GET", "/api/v1/route?key="+url.QueryEscape(key), &r)
		keys[key] = route{r.Owner, r.Replica}
	}
	dns.SetSRV(records(300, false))
	until(t, within, "a leaves", func(st admin.Status) bool { return names(st) == "b.test:300 c.test:100" }, admins...)
	moved := 0
	for key, was := range keys {
		var r admin.Route
		adminCall(t, admins[1], "GET", "/api/v1/route?key="+url.QueryEscape(key), &r)
		switch {
		case was.owner == "a.test":
			moved++
			if r.Owner != was.replica {
				t.Errorf("key %s of a went to %s, not to its replica partner %s", key, r.Owner, was.replica)
			}
		case r.Owner != was.owner:
			t.Errorf("key %s moved from %s to %s, though a did not own it", key, was.owner, r.Owner)
		}
	}
	if moved == 0 {
		t.Error("a owned none of 200 keys")
	}
	agree("a removed")
	for _, tr := range trs {
		tr.await(2)
	}

	// Added again: a returns to both nodes, ramping from one moment.
	servedA := a.webN.Load() + a.sipN.Load()
	dns.SetSRV(records(300, true))
	sts := until(t, within, "a returns, ramping", func(st admin.Status) bool { return byName(st, "a.test").State == "ramping" }, admins...)
	next := [2]*time.Time{byName(sts[0], "a.test").NextStep, byName(sts[1], "a.test").NextStep}
	if next[0] == nil || next[1] == nil || !next[0].Equal(*next[1]) || next[0].Sub(next[0].Truncate(refresh)) != 0 {
		t.Errorf("a's next step %v on one node, %v on the other: want one moment, a whole multiple of %v", next[0], next[1], refresh)
	}
	if f := byName(sts[0], "a.test").LoadFactor; f != 0.5 {
		t.Errorf("a returned at load factor %v, want loadfactor.start 0.5", f)
	}
	agree("a ramping")
	for _, tr := range trs {
		tr.await(2)
	}
	if a.webN.Load()+a.sipN.Load() == servedA {
		t.Error("a served nothing after it returned")
	}

	// The DNS server stops answering: nothing changes, the status says so.
	dns.Pause()
	for _, st := range until(t, within, "discovery not ok", func(st admin.Status) bool {
		return len(st.Discovery) == 2 && !st.Discovery[0].OK && !st.Discovery[1].OK
	}, admins...) {
		if names(st) != "a.test:100 b.test:300 c.test:100" || !strings.Contains(st.Discovery[0].Error, "timeout") || st.Discovery[0].Instances != 3 {
			t.Errorf("DNS paused: instances %s, discovery %+v", names(st), st.Discovery)
		}
	}
	for _, tr := range trs {
		tr.await(2)
	}
	agree("DNS paused")
	dns.Resume()
	until(t, within, "discovery ok again", func(st admin.Status) bool {
		return len(st.Discovery) == 2 && st.Discovery[0].OK && st.Discovery[1].OK
	}, admins...)

	for i, tr := range trs {
		tr.end()
		if n := tr.failures.Load(); n > 0 {
			t.Errorf("traffic %d: %d of %d requests failed: %v", i+1, n, tr.sent.Load()+n, tr.errs)
		}
	}
}

// TestCheckSRV: clb check looks the SRV names up and lists their
// instances with the file's; an SRV name the server does not answer for is
// a warning when the rest makes a valid list, and an error, naming the
// name, when nothing is left to send a listener's requests to.
func TestCheckSRV(t *testing.T) {
	a := newBackend(t, "a")
	dns := dnstest.StartSRV(t, map[string][]string{"a.test": {"127.0.0.1"}}, srvOf("a.test", a, 50))
	head := fmt.Sprintf("listen: {sip: [udp://127.0.0.1:5060], http: 127.0.0.1:8080}\ndiscovery: {resolver: %q, sip: _sip._udp.app.test, http: _http._tcp.app.test, resolve_timeout: 1s}\n", dns.Addr())
	code, out, errOut := clb(t, "", "check", "-config", writeFile(t, head+"instances:\n  - {name: file1, sip: udp://127.0.0.1:5072}\n"))
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"instances: 2 (1 from DNS SRV), total weight 150",
		fmt.Sprintf("a.test  50      33.3%%  udp://%s  %s", a.sip.LocalAddr(), a.web.URL),
		"discovery: sip _sip._udp.app.test: 1 instances",
		"discovery: http _http._tcp.app.test: 1 instances",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}

	dns.Pause()
	defer dns.Resume()
	code, out, errOut = clb(t, "", "check", "-config", writeFile(t, head+"instances:\n  - {name: file1, sip: udp://127.0.0.1:5072, http: http://127.0.0.1:8082}\n"))
	if code != 0 || !strings.Contains(errOut, "clb check: warning: discovery: SRV _sip._udp.app.test from "+dns.Addr().String()) ||
		!strings.Contains(out, "discovery: sip _sip._udp.app.test: no answer: ") {
		t.Errorf("DNS paused, the file's instance serves both: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	path := writeFile(t, head)
	code, out, errOut = clb(t, "", "check", "-config", path)
	if code != 1 || out != "" || !strings.Contains(errOut, "SRV _http._tcp.app.test from") ||
		!strings.Contains(errOut, path+": the instances of the file and of DNS SRV: instances: at least one instance is required") {
		t.Errorf("DNS paused, no instance: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}

// TestSRVNodeReloadAndStop: clb ctl status says each SRV name's state (and
// that routing goes on on the last answer while the server does not
// answer); a reload that changes an SRV name is refused
// (the source is made at start); one that changes refresh is taken; and a
// node with SRV discovery, stopped, leaves no goroutine of clb's (STYLE 8).
func TestSRVNodeReloadAndStop(t *testing.T) {
	a := newBackend(t, "a")
	dns := dnstest.StartSRV(t, map[string][]string{"a.test": {"127.0.0.1"}}, srvOf("a.test", a, 100))
	file := func(name, refresh string) string {
		return fmt.Sprintf("listen: {sip: [udp://127.0.0.1:0], http: 127.0.0.1:0, admin: 127.0.0.1:0}\n"+
			"discovery: {resolver: %q, sip: %s, http: _http._tcp.app.test, refresh: %s, resolve_timeout: 1s}\n", dns.Addr(), name, refresh)
	}
	path := writeFile(t, file("_sip._udp.app.test", "1s"))
	before := goroutineIDs()
	n := loadNode(t, path)
	stop := runNode(t, n)
	defer stop()
	admins := []string{n.admin.Addr()}
	st := until(t, 20*time.Second, "a from DNS", func(st admin.Status) bool { return len(st.Discovery) == 2 && byName(st, "a.test").Name != "" }, admins...)[0]
	first := st.Discovery[0].Answered // at start
	until(t, 20*time.Second, "another round", func(st admin.Status) bool { return st.Discovery[0].Answered.After(first) }, admins...)

	code, out, errOut := clb(t, "", "ctl", "-admin", "http://"+n.admin.Addr(), "status")
	if code != 0 || !strings.Contains(out, "discovery: sip _sip._udp.app.test: 1 instances\ndiscovery: http _http._tcp.app.test: 1 instances\n") {
		t.Errorf("clb ctl status: exit %d\n%s%s", code, out, errOut)
	}
	dns.Pause()
	until(t, 20*time.Second, "a failed round", func(st admin.Status) bool { return !st.Discovery[0].OK }, admins...)
	code, out, errOut = clb(t, "", "ctl", "-admin", "http://"+n.admin.Addr(), "status")
	if want := "discovery: sip _sip._udp.app.test: no answer: SRV _sip._udp.app.test from " + dns.Addr().String(); code != 0 ||
		!strings.Contains(out, want) || !strings.Contains(out, "(routing on its answer of ") {
		t.Errorf("clb ctl status with DNS paused: exit %d\n%s%s\nwant %s", code, out, errOut, want)
	}
	dns.Resume()

	if err := os.WriteFile(path, []byte(file("_sip._udp.other.test", "1s")), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, body := adminCall(t, n.admin.Addr(), "POST", "/api/v1/reload", nil); code != 422 || !strings.Contains(body, "discovery.sip, discovery.http: changed") {
		t.Errorf("reload of another SRV name: %d %s", code, body)
	}
	if err := os.WriteFile(path, []byte(file("_sip._udp.app.test", "1h")), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, body := adminCall(t, n.admin.Addr(), "POST", "/api/v1/reload", nil); code != 200 {
		t.Errorf("reload of refresh: %d %s", code, body)
	}

	stop()
	if left := clbGoroutines(t, before); left != "" {
		t.Errorf("goroutines of clb left after the node stopped:\n%s", left)
	}
}
