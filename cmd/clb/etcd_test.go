package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"clb/admin"
	"clb/config"
	"clb/etcdstate/etcdtest"
)

// etcdNode is one clb process of a test sharing etcd.
type etcdNode struct {
	*proc
	name        string
	admin, http string
	sip         string
}

func startEtcdNode(t *testing.T, name, path string) *etcdNode {
	t.Helper()
	p := startCLB(t, path)
	n := &etcdNode{proc: p, name: name, admin: p.started["admin"].(string), http: p.started["http"].(string)}
	n.sip = strings.TrimPrefix(p.started["sip"].([]any)[0].(string), "udp://")
	return n
}

func (n *etcdNode) status(t *testing.T) admin.Status {
	t.Helper()
	var st admin.Status
	if code, body := adminCall(t, n.admin, "GET", "/api/v1/status", &st); code != 200 {
		t.Fatalf("node %s: status: %d %s", n.name, code, body)
	}
	return st
}

// logFor waits for the node's next log entry msg about instance.
func (n *etcdNode) logFor(msg, instance string) map[string]any {
	n.t.Helper()
	for {
		if e := n.log(msg); e["instance"] == instance {
			return e
		}
	}
}

// sameRouting checks that two nodes route alike within a second: equal
// fingerprints, and the same owner and replica partner for every key, at
// one moment (a load factor step between the two nodes' answers, seen as
// a's fingerprint changing across them, makes it look again). Nodes may
// disagree for a moment, as when each retires a finished drain at its own
// tick: while they do, it waits for their next table change (a long poll
// of the status), and fails if they still disagree a second after the
// first look.
func sameRouting(t *testing.T, a, b *etcdNode) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		before := a.status(t)
		var ra, rb []admin.Route
		for k := range 40 {
			for _, n := range []*etcdNode{a, b} {
				var r admin.Route
				if code, body := adminCall(t, n.admin, "GET", fmt.Sprintf("/api/v1/route?key=user%d", k), &r); code != 200 {
					t.Fatalf("route: %d %s", code, body)
				}
				if n == a {
					ra = append(ra, r)
				} else {
					rb = append(rb, r)
				}
			}
		}
		sb := b.status(t)
		after := a.status(t)
		if before.Fingerprint != after.Fingerprint {
			continue // a step fell between
		}
		var differ []string
		if sb.Fingerprint != after.Fingerprint {
			differ = append(differ, fmt.Sprintf("fingerprints %s on %s and %s on %s:\n%s\n%s", after.Fingerprint, a.name,
				sb.Fingerprint, b.name, states(after), states(sb)))
		}
		for k := range ra {
			if ra[k].Owner != rb[k].Owner || ra[k].Replica != rb[k].Replica || ra[k].Fallback != rb[k].Fallback {
				differ = append(differ, fmt.Sprintf("key %s: %+v on %s, %+v on %s", ra[k].Key, ra[k], a.name, rb[k], b.name))
			}
		}
		if len(differ) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("the nodes disagree for more than a second:\n%s", strings.Join(differ, "\n"))
			return
		}
		var wg sync.WaitGroup
		for _, w := range []struct {
			n *etcdNode
			v uint64
		}{{a, after.Version}, {b, sb.Version}} {
			wg.Go(func() { // not adminCall: no t.Fatal off the test's goroutine
				res, err := http.Get(fmt.Sprintf("http://%s/api/v1/status?wait=300ms&version=%d", w.n.admin, w.v))
				if err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			})
		}
		wg.Wait()
	}
}

func states(st admin.Status) string {
	var s []string
	for _, i := range st.Instances {
		s = append(s, fmt.Sprintf("%s:%s@%v", i.Name, i.State, i.LoadFactor))
	}
	return strings.Join(s, " ")
}

// sameInstance checks that both nodes give name the state given, the same
// load factor and the same next step (a step between the two answers makes
// it look again), and returns A's.
func sameInstance(t *testing.T, a, b *etcdNode, name, state string) admin.InstanceStatus {
	t.Helper()
	for try := 0; ; try++ {
		ia, ib, again := byName(a.status(t), name), byName(b.status(t), name), byName(a.status(t), name)
		if (ia.LoadFactor != again.LoadFactor || ia.State != again.State || !reflect.DeepEqual(ia.NextStep, again.NextStep)) && try < 10 {
			continue
		}
		if ia.State != state || ib.State != state {
			t.Errorf("%s: %s on %s, %s on %s, want %s on both", name, ia.State, a.name, ib.State, b.name, state)
		}
		if ia.LoadFactor != ib.LoadFactor {
			t.Errorf("%s: load factor %v on %s, %v on %s", name, ia.LoadFactor, a.name, ib.LoadFactor, b.name)
		}
		if (ia.NextStep == nil) != (ib.NextStep == nil) || ia.NextStep != nil && !ia.NextStep.Equal(*ib.NextStep) {
			t.Errorf("%s: next step %v on %s, %v on %s: not the same moment", name, ia.NextStep, a.name, ib.NextStep, b.name)
		}
		return ia
	}
}

// TestNodesShareEtcd (issue 11 item 1): two clb processes share one etcd.
// A drain posted to A runs on B within a second, from the same moment: both
// say draining, at the same load factor and next step, and route every key
// to the same owner and replica partner. etcd killed under traffic: both
// keep routing on their last state (no request fails), say "etcd
// unreachable" in their status (and clb ctl status), and refuse a drain
// with 503 (clb ctl: exit 1 and the error) rather than apply it to one
// node. etcd back: both say so within a second and route alike, and a drain
// given to B by clb ctl runs on A. An instance that registers itself
// (clb-instance -etcd) joins both tables, ramped alike; killed (SIGKILL), it
// leaves both when its lease expires.
func TestNodesShareEtcd(t *testing.T) {
	etcd := etcdtest.Start(t)
	backends := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")}
	yaml := fmt.Sprintf(`listen:
  sip: [udp://127.0.0.1:0]
  http: 127.0.0.1:0
  admin: 127.0.0.1:0
health: {interval: 200ms, timeout: 200ms, rise: 1, fall: 3}
loadfactor: {start: 0.25, increase: 0.25, period: 2s}
etcd: {endpoints: [%s], dial_timeout: 500ms}
instances:
`, etcd.URL())
	for _, b := range backends {
		yaml += b.yaml()
	}
	path := writeFile(t, yaml)
	na, nb := startEtcdNode(t, "A", path), startEtcdNode(t, "B", path)
	na.log("etcd reachable")
	nb.log("etcd reachable")
	trA, trB := startTraffic(t, na.http, na.sip), startTraffic(t, nb.http, nb.sip)
	trA.await(1)
	trB.await(1)

	// A drain posted to A runs on B.
	var is admin.InstanceStatus
	if code, body := adminCall(t, na.admin, "POST", "/api/v1/instances/b/drain", &is); code != 200 || is.State != "draining" {
		t.Fatalf("drain on A: %d %s", code, body)
	}
	posted := time.Now()
	nb.logFor("admin action applied", "b")
	if took := time.Since(posted); took > time.Second {
		t.Errorf("B applied the drain %v after A answered, want within a second", took)
	}
	if st := sameInstance(t, na, nb, "b", "draining"); st.LoadFactor != 0.75 && st.LoadFactor != 0.5 {
		t.Errorf("b drains at %v, want a first step down", st.LoadFactor)
	}
	sameRouting(t, na, nb)

	// etcd killed: routing goes on, the state stays, a drain is refused.
	etcd.Stop()
	for _, n := range []*etcdNode{na, nb} {
		// A line logged before the stop (an answer slower than
		// dial_timeout on a busy machine) is followed by one saying
		// etcd is reachable: the status tells them apart.
		for {
			n.log("etcd unreachable; routing on the last state known")
			if st := n.status(t); st.Etcd != nil && !st.Etcd.Reachable && st.Etcd.Error != "" {
				break
			}
		}
	}
	code, body := adminCall(t, nb.admin, "POST", "/api/v1/instances/c/drain", nil)
	if code != 503 || !strings.Contains(body, `"error": "etcd unreachable: `) {
		t.Errorf("drain with etcd gone: %d %s, want 503 etcd unreachable", code, body)
	}
	if code, _, errOut := clb(t, "", "ctl", "-admin", na.admin, "drain", "c"); code != ctlRefused || !strings.Contains(errOut, "etcd unreachable: ") {
		t.Errorf("clb ctl drain with etcd gone: exit %d, %s; want %d, etcd unreachable", code, errOut, ctlRefused)
	}
	if code, out, errOut := clb(t, "", "ctl", "-admin", na.admin, "status", "-interval", "0"); code != 0 || !strings.Contains(out, "etcd unreachable: ") {
		t.Errorf("clb ctl status with etcd gone: exit %d, %s%s; want etcd unreachable", code, out, errOut)
	}
	for _, n := range []*etcdNode{na, nb} {
		if st := byName(n.status(t), "c"); st.State != "up" {
			t.Errorf("node %s: c is %s after the refused drain, want up", n.name, st.State)
		}
	}
	trA.await(2)
	trB.await(2)

	// etcd back: both catch up within a second and agree.
	etcd.Start()
	back := time.Now()
	na.log("etcd reachable")
	nb.log("etcd reachable")
	if took := time.Since(back); took > time.Second {
		t.Errorf("nodes reached etcd again %v after it returned, want within a second", took)
	}
	for _, n := range []*etcdNode{na, nb} {
		if st := n.status(t); st.Etcd == nil || !st.Etcd.Reachable || st.Etcd.Error != "" || st.Etcd.Revision < 2 {
			t.Errorf("node %s: status etcd %+v, want reachable", n.name, st.Etcd)
		}
	}
	sameRouting(t, na, nb)
	if code, out, errOut := clb(t, "", "ctl", "-admin", nb.admin, "drain", "c"); code != 0 {
		t.Fatalf("clb ctl drain on B after etcd's return: exit %d %s%s", code, out, errOut)
	}
	na.logFor("admin action applied", "c")
	sameInstance(t, na, nb, "c", "draining")
	sameRouting(t, na, nb)
	trA.end()
	trB.end()
	for _, tr := range []*traffic{trA, trB} {
		if f := tr.failures.Load(); f > 0 {
			t.Errorf("%d of %d requests failed: %v", f, tr.sent.Load()+f, tr.errs)
		}
	}

	// A registered instance joins both tables, ramped alike, and leaves
	// both when its lease expires.
	inst := exec.Command(os.Args[0], "instance", "-name", "d", "-sip", "127.0.0.1:0", "-http", "127.0.0.1:0",
		"-etcd", etcd.URL(), "-log", "warn")
	inst.Env = append(os.Environ(), "CLB_TEST_MAIN=1")
	stdout, err := inst.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
		}
		_ = inst.Wait()
		close(exited)
	}()
	t.Cleanup(func() { _ = inst.Process.Kill(); <-exited })
	na.logFor("instance added", "d")
	nb.logFor("instance added", "d")
	for _, n := range []*etcdNode{na, nb} {
		// The log line comes as the table with d is published.
		watch(t, n.admin, 5*time.Second, func(st admin.Status) bool { return byName(st, "d").Name != "" })
	}
	if st := sameInstance(t, na, nb, "d", "ramping"); st.LoadFactor >= 1 || st.SIP == "" || st.HTTP == "" {

		t.Errorf("d: %+v, want ramping with its addresses", st)
	}
	sameRouting(t, na, nb)

	if err := inst.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	killed := time.Now()
	na.logFor("instance removed", "d")
	nb.logFor("instance removed", "d")
	t.Logf("d left both tables %v after its SIGKILL (lease 5 s)", time.Since(killed).Round(time.Millisecond))
	for _, n := range []*etcdNode{na, nb} {
		// The log line comes as the table without d is published.
		watch(t, n.admin, 5*time.Second, func(st admin.Status) bool { return byName(st, "d").Name == "" })
	}
}

// TestEtcdNodeStopLeavesNoGoroutine (STYLE 8): a node with etcd, stopped
// after a drain went through etcd, leaves no goroutine that runs clb's code
// or that clb's code started (its watch and its probe of etcd are owned by
// run's context).
func TestEtcdNodeStopLeavesNoGoroutine(t *testing.T) {
	etcd := etcdtest.Start(t)
	a, b := newBackend(t, "a"), newBackend(t, "b")
	path := writeFile(t, "etcd: {endpoints: ["+etcd.URL()+"]}\n"+nodeHead+a.yaml()+b.yaml())
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logger, log := etcdtest.NewLog(t)
	before := goroutineIDs()
	n, err := newNode(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- n.run(ctx, nil) }()
	log.Await(t, "etcd: etcd reachable", 10*time.Second)
	if code, body := adminCall(t, n.admin.Addr(), "POST", "/api/v1/instances/b/drain", nil); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if left := clbGoroutines(t, before); left != "" {
		t.Errorf("goroutines of clb left after the node stopped:\n%s", left)
	}
}
