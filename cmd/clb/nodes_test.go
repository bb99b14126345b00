package main

// The multi-node proofs of issue 11 (SPEC section 11), with real processes
// on loopback: three clb nodes (this test binary run as clb run, so that
// one can be killed with SIGKILL), one etcd, three sample instances
// (processes too), SIP clients that move to another node's address when a
// transaction goes unanswered, HTTP clients that reconnect to another node.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"clb/admin"
	"clb/etcdstate/etcdtest"
)

// advertised is the name the nodes share in their Via and Record-Route.
const advertised = "sip.test"

// nodeSet is the clb nodes of a test, sharing one etcd, before sample
// instances.
type nodeSet struct {
	t     *testing.T
	etcd  *etcdtest.Server
	inst  *cluster // the sample instances; no clb node of its own
	names []string // the instances'
	nodes []*etcdNode
	logs  []*etcdtest.Log // each node's messages, since it last started
	paths []string        // each node's configuration file
	sip   []string        // each node's SIP address: 127.0.0.N and one port
	http  []string        // each node's HTTP front end, as a base URL
}

// nodesYAML is the nodes' health and ramp: an instance is marked down at
// most 1.2 s after it dies (at once by a refused HTTP connection), and
// ramps up over 6 s (long enough for a node to be started again
// meanwhile). A probe may take 400 ms: three race-built nodes, three
// instances and the load share two busy cores, and shorter timeouts had a
// starved node mark every instance down.
const nodesYAML = `health: {interval: 400ms, timeout: 400ms, rise: 1, fall: 3}
loadfactor: {start: 0.25, increase: 0.25, period: 2s}
`

// startNodes starts etcd, the sample instances, and n clb nodes that
// advertise one name, on 127.0.0.1 … 127.0.0.n with one SIP port (as
// behind one DNS name), and waits for every node to reach etcd and to see
// every instance up.
func startNodes(t *testing.T, n int, instances ...string) *nodeSet {
	t.Helper()
	s := &nodeSet{t: t, etcd: etcdtest.Start(t), names: instances,
		inst: &cluster{opts: clusterOptions{exe: os.Args[0], env: []string{"CLB_TEST_MAIN=1"}}, procs: map[string]*instanceProc{}}}
	t.Cleanup(func() {
		if err := s.inst.close(); err != nil {
			t.Errorf("instances: %v", err)
		}
	})
	var stdins []io.WriteCloser
	var list strings.Builder
	for _, name := range instances {
		p, stdin, err := s.inst.startInstance(name, "127.0.0.1:0", "127.0.0.1:0", "-")
		if err != nil {
			t.Fatal(err)
		}
		stdins = append(stdins, stdin)
		fmt.Fprintf(&list, "  - {name: %s, sip: %s, http: %s}\n", name, p.started.SIP, p.started.HTTP)
	}
	port := sharedUDPPort(t, n)
	dir := t.TempDir()
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", i+1)
		s.sip = append(s.sip, net.JoinHostPort(ip, strconv.Itoa(port)))
		s.http = append(s.http, fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t)))
		yaml := fmt.Sprintf(`listen:
  sip: [udp://%s]
  http: %s
  admin: 127.0.0.1:%d
  advertise: %s
etcd: {endpoints: [%s], dial_timeout: 500ms}
%sinstances:
%s`, s.sip[i], strings.TrimPrefix(s.http[i], "http://"), etcdtest.FreePort(t), advertised, s.etcd.URL(), nodesYAML, list.String())
		path := filepath.Join(dir, fmt.Sprintf("node%d.yaml", i))
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		s.paths = append(s.paths, path)
		s.nodes, s.logs = append(s.nodes, nil), append(s.logs, nil)
		s.start(i)
	}
	// The instances find their partners through any node's admin API.
	var admins []string
	for _, nd := range s.nodes {
		admins = append(admins, "http://"+nd.admin)
	}
	s.inst.admin = strings.Join(admins, ",")
	for _, stdin := range stdins {
		_, _ = io.WriteString(stdin, s.inst.admin+"\n")
		stdin.Close()
	}
	// The instances started a moment ago: every node ramps them up from
	// then, and the tests start from all up.
	for _, nd := range s.nodes {
		awaitAllUp(t, nd, len(instances))
	}
	return s
}

// start starts node i (again) from its file, waits for it to reach etcd,
// and from then on drops its log, so that a node logging under load never
// blocks on a full pipe.
func (s *nodeSet) start(i int) {
	s.t.Helper()
	nd := startEtcdNode(s.t, string(rune('A'+i)), s.paths[i])
	nd.log("etcd reachable")
	l := etcdtest.NewLines()
	go func() {
		for e := range nd.lines {
			msg, _ := e["msg"].(string)
			l.Add(msg)
		}
	}()
	s.nodes[i], s.logs[i] = nd, l
}

// kill ends node i with SIGKILL and waits for the process to be gone.
func (s *nodeSet) kill(i int) {
	s.t.Helper()
	s.nodes[i].signal(syscall.SIGKILL)
	<-s.nodes[i].done
}

// restart stops node i with SIGTERM (a clean stop), starts it again on
// the same addresses, and waits until it sees every instance up.
func (s *nodeSet) restart(i int) {
	s.t.Helper()
	begun := time.Now()
	s.nodes[i].signal(syscall.SIGTERM)
	select {
	case err := <-s.nodes[i].done:
		if err != nil {
			s.t.Errorf("node %s: %v after SIGTERM", s.nodes[i].name, err)
		}
	case <-time.After(20 * time.Second):
		s.t.Fatalf("node %s did not stop within 20 s of SIGTERM", s.nodes[i].name)
	}
	stopped := time.Now()
	s.start(i)
	awaitAllUp(s.t, s.nodes[i], len(s.names))
	s.t.Logf("node %s restarted: stopped %v after SIGTERM, serving again %v later",
		s.nodes[i].name, stopped.Sub(begun).Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
}

// live is the nodes still running.
func (s *nodeSet) live() []*etcdNode {
	var out []*etcdNode
	for _, nd := range s.nodes {
		if nd.cmd.ProcessState == nil {
			out = append(out, nd)
		}
	}
	return out
}

// awaitAllUp waits up to 20 s for allUp on node nd. A probe that changes
// nothing changes no table version, which is what a long poll of the
// status waits for: it polls with a short wait instead.
func awaitAllUp(t *testing.T, nd *etcdNode, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	st := nd.status(t)
	for !allUp(st, n) {
		if time.Now().After(deadline) {
			t.Fatalf("node %s: the instances are not all up and probed within 20 s: %s", nd.name, states(st))
		}
		adminCall(t, nd.admin, "GET", fmt.Sprintf("/api/v1/status?wait=100ms&version=%d", st.Version), &st)
	}
}

// allUp says that the n instances are up, each probed at least once: a
// node that joins the ramps of the others (SPEC section 11) learns at its
// first probe that an instance which started a moment ago is ramping.
func allUp(st admin.Status, n int) bool {
	up := 0
	for _, i := range st.Instances {
		if i.State == "up" && i.Health != nil && i.Health.LastProbe != nil {
			up++
		}
	}
	return up == n
}

// sharedUDPPort is a UDP port free on 127.0.0.1 … 127.0.0.n.
func sharedUDPPort(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		conns := []net.PacketConn{c}
		for i := 2; i <= n; i++ {
			if c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.%d:%d", i, port)); err == nil {
				conns = append(conns, c)
			}
		}
		for _, c := range conns {
			c.Close()
		}
		if len(conns) == n {
			return port
		}
	}
	t.Fatalf("no UDP port free on 127.0.0.1 to 127.0.0.%d", n)
	return 0
}

// routes is one node's answer to POST /api/v1/route: its lines, and the
// fingerprint of the table that made them.
type routes struct {
	node        string
	fingerprint string
	lines       []string // "KEY OWNER REPLICA"
	err         error
}

func postRoutes(nd *etcdNode, keys string) routes {
	r := routes{node: nd.name}
	client := http.Client{Timeout: 30 * time.Second}
	res, err := client.Post("http://"+nd.admin+"/api/v1/route", "text/plain", strings.NewReader(keys))
	if err != nil {
		r.err = err
		return r
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != 200 {
		r.err = fmt.Errorf("POST /api/v1/route: %d %v %.200s", res.StatusCode, err, body)
		return r
	}
	r.fingerprint = res.Header.Get("X-CLB-Fingerprint")
	r.lines = strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	return r
}

// routeAlike asks every node at once for the owner and replica partner of
// every key, and checks that they answer alike, with equal fingerprints.
// Nodes may differ for a moment (a load factor step falling between their
// answers, as each retires a finished drain at its own tick): it asks again
// until they agree, and fails if they still differ after within. It
// returns the agreed lines.
func routeAlike(t *testing.T, nodes []*etcdNode, keys []string, within time.Duration) []string {
	t.Helper()
	body := strings.Join(keys, "\n") + "\n"
	deadline := time.Now().Add(within)
	for {
		answers := make([]routes, len(nodes))
		var wg sync.WaitGroup
		for i, nd := range nodes {
			wg.Go(func() { answers[i] = postRoutes(nd, body) })
		}
		wg.Wait()
		var differ []string
		for _, a := range answers {
			if a.err != nil {
				t.Fatalf("node %s: %v", a.node, a.err)
			}
			if len(a.lines) != len(keys) {
				t.Fatalf("node %s answered %d lines for %d keys", a.node, len(a.lines), len(keys))
			}
		}
		first := answers[0]
		for _, a := range answers[1:] {
			if a.fingerprint != first.fingerprint {
				differ = append(differ, fmt.Sprintf("fingerprint %s on %s, %s on %s", first.fingerprint, first.node, a.fingerprint, a.node))
			}
			n := 0
			for k := range a.lines {
				if a.lines[k] != first.lines[k] {
					if n++; n <= 5 {
						differ = append(differ, fmt.Sprintf("%q on %s, %q on %s", first.lines[k], first.node, a.lines[k], a.node))
					}
				}
			}
			if n > 5 {
				differ = append(differ, fmt.Sprintf("… %d keys differ between %s and %s", n, first.node, a.node))
			}
		}
		if len(differ) == 0 {
			return first.lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes route differently for more than %v:\n%s", within, strings.Join(differ, "\n"))
		}
	}
}

// ownersOf parses "KEY OWNER REPLICA" lines into each key's owner and
// replica partner.
func ownersOf(t *testing.T, lines []string) (owner, replica []string) {
	t.Helper()
	for _, l := range lines {
		f := strings.Split(l, " ")
		if len(f) != 3 {
			t.Fatalf("line %q is not KEY OWNER REPLICA", l)
		}
		owner, replica = append(owner, f[1]), append(replica, f[2])
	}
	return owner, replica
}

// sameInstanceOn is sameInstance of every node against the first.
func sameInstanceOn(t *testing.T, nodes []*etcdNode, name, state string) admin.InstanceStatus {
	t.Helper()
	var st admin.InstanceStatus
	for _, other := range nodes[1:] {
		st = sameInstance(t, nodes[0], other, name, state)
	}
	return st
}

// TestThreeNodesRouteAlike (issue 11, the first two proofs): three clb
// processes, one etcd, three sample instances. 100,000 keys get the same
// owner and replica partner from every node, and their fingerprints are
// equal. A drain posted to node A runs on B and C: within a second all
// three say the instance is draining, at the same load factor with the
// same next step, and route every key alike; the keys it gave up went,
// on all three, to the replica partners named for them before the drain.
func TestThreeNodesRouteAlike(t *testing.T) {
	if testing.Short() {
		t.Skip("three clb processes, etcd and three instances")
	}
	s := startNodes(t, 3, "inst1", "inst2", "inst3")
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d@example.com", i)
	}
	before := routeAlike(t, s.nodes, keys, time.Second)
	owner, replica := ownersOf(t, before)
	count := map[string]int{}
	for k := range keys {
		count[owner[k]]++
		if owner[k] == replica[k] || replica[k] == "-" {
			t.Fatalf("%s: owner %s, replica partner %s", keys[k], owner[k], replica[k])
		}
	}
	for _, name := range s.names {
		if c := count[name]; c < 25_000 || c > 42_000 {
			t.Errorf("%s owns %d of 100,000 keys, not about a third", name, c)
		}
	}

	const victim = "inst2"
	var is admin.InstanceStatus
	if code, body := adminCall(t, s.nodes[0].admin, "POST", "/api/v1/instances/"+victim+"/drain", &is); code != 200 || is.State != "draining" {
		t.Fatalf("drain on A: %d %s", code, body)
	}
	posted := time.Now()
	for _, nd := range s.nodes[1:] {
		watch(t, nd.admin, 5*time.Second, func(st admin.Status) bool { return byName(st, victim).State == "draining" })
		if took := time.Since(posted); took > time.Second {
			t.Errorf("node %s says %s is draining %v after A answered, want within a second", nd.name, victim, took)
		}
	}
	st := sameInstanceOn(t, s.nodes, victim, "draining")
	if st.LoadFactor >= 1 || st.LoadFactor <= 0 || st.NextStep == nil {
		t.Errorf("%s drains at %v, next step %v: want a step down under way", victim, st.LoadFactor, st.NextStep)
	}
	during := routeAlike(t, s.nodes, keys, time.Second)
	now, _ := ownersOf(t, during)
	moved := 0
	for k := range keys {
		switch {
		case now[k] == owner[k]:
		case owner[k] == victim && now[k] == replica[k]:
			moved++
		default:
			t.Errorf("%s went from %s to %s during the drain of %s (replica partner %s)", keys[k], owner[k], now[k], victim, replica[k])
		}
	}
	t.Logf("drain of %s at load factor %v: %d of its %d keys moved to their replica partners on all three nodes",
		victim, st.LoadFactor, moved, count[victim])
	if moved == 0 || moved == count[victim] {
		t.Errorf("%d of %s's %d keys moved at load factor %v: not a slice", moved, victim, count[victim], st.LoadFactor)
	}
}

// dialogLoad runs n dialogs through the phone's nodes (dialog i starts on
// node i, round the list): each sets up, sends a re-INVITE every period
// until stop is closed, then a BYE. Its load counts a round per re-INVITE.
func dialogLoad(ph *phone, n int, period time.Duration, stop <-chan struct{}) (*load, []*dialogRecord) {
	l := newLoad(n)
	recs := make([]*dialogRecord, n)
	var wg sync.WaitGroup
	ctx := context.Background()
	for i := range n {
		r := &dialogRecord{call: ph.newCall(fmt.Sprintf("d%d", i))}
		r.call.node = i
		recs[i] = r
		record := func(method string, x exchange) { r.xs, r.methods = append(r.xs, x), append(r.methods, method) }
		wg.Go(func() {
			defer l.step(i, true)
			// Spread the dialogs over the period (the load's pacing).
			time.Sleep(time.Duration(i) * period / time.Duration(n))
			x := r.call.invite(ctx)
			record("INVITE", x)
			if !x.ok() {
				return
			}
			r.home = x.servedBy
			tick := time.NewTicker(period)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					record("BYE", r.call.bye(ctx))
					return
				case <-tick.C:
				}
				record("re-INVITE", r.call.reinvite(ctx))
				l.step(i, false)
			}
		})
	}
	l.done = wg.Wait
	return l, recs
}

// outcome is what a test saw of its dialogs and web sessions.
type outcome struct {
	dialogs, setUp, ended int // dialogs; set up; ended with 200 to BYE
	transactions, failed  int
	allowed               int // failed transactions the test allows: in flight where something died
	sessions, lost        int // web sessions; sessions whose state was lost
	increments            int64
	moves                 int // SIP dialogs and web sessions that moved to another node
}

func (o outcome) String() string {
	return fmt.Sprintf("%d dialogs (%d set up, %d ended with 200 to BYE), %d transactions, %d failed (%d in flight where something died); "+
		"%d web sessions, %d increments acknowledged, %d lost; %d moves of a client to another node",
		o.dialogs, o.setUp, o.ended, o.transactions, o.failed, o.allowed, o.sessions, o.increments, o.lost, o.moves)
}

// tally checks the dialogs and web sessions once their loads are done:
// every dialog set up and ended with 200 to its BYE, every failed
// transaction among those inFlight says may fail, no web session lost.
func tally(t *testing.T, recs []*dialogRecord, web *load, inFlight func(r *dialogRecord, x exchange) bool) outcome {
	t.Helper()
	o := outcome{dialogs: len(recs), sessions: len(web.sessions)}
	for _, r := range recs {
		o.moves += r.call.moves
		if len(r.xs) > 0 && r.xs[0].ok() {
			o.setUp++
		} else {
			t.Errorf("dialog %s: INVITE failed: %+v", r.call.user, r.xs)
			continue
		}
		if last := len(r.xs) - 1; r.methods[last] == "BYE" && r.xs[last].ok() {
			o.ended++
		}
		for k, x := range r.xs {
			o.transactions++
			if x.ok() {
				continue
			}
			o.failed++
			if inFlight(r, x) {
				o.allowed++
			}
			t.Logf("%s of %s (home %s, first sent to node %d): %d from %q", r.methods[k], r.call.user, r.home, x.node, x.code, x.servedBy)
		}
	}
	for _, s := range web.sessions {
		o.increments += s.counter
		o.moves += s.moves
		if s.lost != "" {
			o.lost++
			if o.lost <= 5 {
				t.Errorf("a web session lost its state: %s (served by %v)", s.lost, s.served)
			}
		}
	}
	if o.setUp != o.dialogs || o.ended != o.dialogs {
		t.Errorf("%d of %d dialogs set up, %d ended with 200 to BYE", o.setUp, o.dialogs, o.ended)
	}
	if o.failed > o.allowed {
		t.Errorf("%d transactions failed, %d of them in flight where something died", o.failed, o.allowed)
	}
	if o.lost != 0 {
		t.Errorf("%d of %d web sessions lost", o.lost, o.sessions)
	}
	return o
}

// inFlightAt says whether x was in flight at moment at and went through
// node (any node if node < 0).
func inFlightAt(x exchange, at time.Time, node int) bool {
	return (node < 0 || x.node == node) && x.sent.Before(at) && (x.answered.IsZero() || x.answered.After(at))
}

// startLoad starts web sessions and dialogs spread over the nodes.
func (s *nodeSet) startLoad(stop <-chan struct{}) (web, sip *load, recs []*dialogRecord) {
	s.t.Helper()
	ph, err := newPhoneAcross(s.sip, time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(ph.close)
	web = webLoadAcross(s.http, 90, 500*time.Millisecond, stop)
	sip, recs = dialogLoad(ph, 45, time.Second, stop)
	return web, sip, recs
}

// underLoad is a nodeSet with web sessions and dialogs going through it.
type underLoad struct {
	*nodeSet
	stop     chan struct{}
	web, sip *load
	recs     []*dialogRecord
}

// startUnderLoad starts three nodes before three instances, and the load,
// and returns once every session and dialog has been served.
func startUnderLoad(t *testing.T) *underLoad {
	t.Helper()
	u := &underLoad{nodeSet: startNodes(t, 3, "inst1", "inst2", "inst3"), stop: make(chan struct{})}
	u.web, u.sip, u.recs = u.startLoad(u.stop)
	u.web.await(t, 2)
	u.sip.await(t, 1)
	return u
}

// await waits for every web session to make web more requests and every
// dialog sip more re-INVITEs.
func (u *underLoad) await(web, sip int) {
	u.t.Helper()
	u.web.await(u.t, web)
	u.sip.await(u.t, sip)
}

// end stops the load and tallies it (see tally).
func (u *underLoad) end(inFlight func(r *dialogRecord, x exchange) bool) outcome {
	u.t.Helper()
	close(u.stop)
	u.web.done()
	u.sip.done()
	return tally(u.t, u.recs, u.web, inFlight)
}

// TestThreeNodesInstanceKilled (issue 11, third proof): an instance killed
// with SIGKILL and started again under SIP and HTTP load through all three
// nodes at once. Every node marks it down and ramps it up again alike (the
// same load factor and next step on all three, at steps of its ramp: the
// ramp is anchored on the X-CLB-Started its probe answers carry), node C
// killed and started again meanwhile included. Its
// dialogs' re-INVITEs and BYEs and its web sessions' counters go on at
// their replica partners: every dialog ends with 200 to its BYE, no web
// session loses its count.
func TestThreeNodesInstanceKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("three clb processes, etcd and three instances under load")
	}
	s := startUnderLoad(t)

	// Each dialog's replica partner, as the nodes name it with all up.
	var keys []string
	for _, r := range s.recs {
		keys = append(keys, r.call.fromTag+r.call.callID)
	}
	_, replicas := ownersOf(t, routeAlike(t, s.nodes, keys, time.Second))
	for i, r := range s.recs {
		r.replica = replicas[i]
	}

	const victim = "inst3"
	was := s.inst.started(victim)
	if err := s.inst.kill(victim); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for _, nd := range s.nodes {
		watch(t, nd.admin, 10*time.Second, func(st admin.Status) bool { return byName(st, victim).State == "down" })
	}
	t.Logf("%s down on all three nodes %v after SIGKILL", victim, time.Since(killed).Round(time.Millisecond))
	s.web.await(t, 1)
	if err := s.inst.restart(victim, was); err != nil {
		t.Fatal(err)
	}
	for _, nd := range s.nodes {
		watch(t, nd.admin, 10*time.Second, func(st admin.Status) bool { return byName(st, victim).State == "ramping" })
	}
	first := sameInstanceOn(t, s.nodes, victim, "ramping")
	// Node C killed and started again while the ramp runs: it finds the
	// instance healthy at its start, and joins the others' ramp at its
	// first probe (the instance's X-CLB-Started), rather than give it
	// f = 1 for the rest of the ramp.
	s.kill(2)
	s.start(2)
	watch(t, s.nodes[2].admin, 5*time.Second, func(st admin.Status) bool { return byName(st, victim).State == "ramping" })
	joined := sameInstanceOn(t, s.nodes, victim, "ramping")
	watch(t, s.nodes[0].admin, 5*time.Second, func(st admin.Status) bool {
		return byName(st, victim).LoadFactor != joined.LoadFactor
	})
	second := sameInstanceOn(t, s.nodes, victim, byName(s.nodes[0].status(t), victim).State)
	t.Logf("%s ramps alike on all three nodes: %v (next step %v), %v with node C started again, then %v",
		victim, first.LoadFactor, first.NextStep, joined.LoadFactor, second.LoadFactor)
	for _, nd := range s.nodes {
		watch(t, nd.admin, 10*time.Second, func(st admin.Status) bool { return byName(st, victim).State == "up" })
	}
	s.await(2, 1)
	o := s.end(func(r *dialogRecord, x exchange) bool { return r.home == victim && inFlightAt(x, killed, -1) })
	moved, home := 0, 0
	for _, w := range s.web.sessions {
		if len(w.served) > 1 && w.served[0] == victim {
			moved++
			if w.served[len(w.served)-1] == victim {
				home++
			}
		}
	}
	rerouted := 0
	for _, r := range s.recs {
		for k, x := range r.xs {
			if r.home == victim && x.sent.After(killed) && x.ok() && x.servedBy != victim {
				rerouted++
				if x.servedBy != r.replica {
					t.Errorf("%s of %s answered by %s, not its replica partner %s", r.methods[k], r.call.user, x.servedBy, r.replica)
				}
			}
		}
	}
	t.Logf("%v; %d web sessions of %s moved to their partners, %d of them back home; %d requests of its dialogs answered by their replica partners",
		o, moved, victim, home, rerouted)
	if moved == 0 || home == 0 || rerouted == 0 {
		t.Errorf("%d web sessions of %s moved and %d came home, %d requests of its dialogs re-routed: the test proved nothing", moved, victim, home, rerouted)
	}
}

// TestThreeNodesNodeKilled (issue 11, fourth proof): a clb node killed with
// SIGKILL under load, with dialogs and web sessions in flight through it.
// Its SIP clients move to another node's address when a transaction goes
// unanswered, its HTTP clients reconnect to another node; every dialog's
// re-INVITEs and BYE reach the instance that holds it and every web
// session's counter goes on: 0 lost, and the failed transactions are at
// most those in flight on the dead node. The node comes back; then every
// node is restarted in turn (SIGTERM, start) under load: 0 lost.
func TestThreeNodesNodeKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("three clb processes, etcd and three instances under load")
	}
	s := startUnderLoad(t)

	const dead = 1 // node B
	s.kill(dead)
	killed := time.Now()
	s.await(2, 2)
	if len(s.live()) != 2 {
		t.Fatalf("%d nodes live, want 2", len(s.live()))
	}
	s.start(dead)
	awaitAllUp(t, s.nodes[dead], len(s.names))
	s.await(1, 1)
	var restarts []time.Time
	for i := range s.nodes {
		restarts = append(restarts, time.Now())
		s.restart(i)
		s.await(1, 1)
	}
	o := s.end(func(r *dialogRecord, x exchange) bool {
		if inFlightAt(x, killed, dead) {
			return true
		}
		for i, at := range restarts {
			if inFlightAt(x, at, i) {
				return true
			}
		}
		return false
	})
	// B's SIP transactions in flight at its kill, whatever their outcome;
	// the dialogs it record-routed, which went on through A and C.
	inFlight, through := 0, 0
	for _, r := range s.recs {
		if r.xs[0].node == dead {
			through++
		}
		for _, x := range r.xs {
			if inFlightAt(x, killed, dead) {
				inFlight++
			}
		}
	}
	t.Logf("node B killed with %d dialogs set up through it and %d SIP transactions in flight, started again, "+
		"then A, B and C restarted in turn: %v", through, inFlight, o)
	if o.moves == 0 || through == 0 {
		t.Errorf("%d dialogs through B, %d moves of a client to another node: the test proved nothing", through, o.moves)
	}
	routeAlike(t, s.nodes, []string{"a", "b", "c", "user:1", "user:2"}, time.Second)
}

// TestThreeNodesEtcdOutage (issue 11, fifth proof): etcd killed under load
// for longer than the nodes' etcd timeouts (dial_timeout 500 ms; the outage
// lasts 10 s, as the issue says). Every node goes on routing on its last
// state and says etcd is unreachable in its status; a drain posted
// meanwhile is refused with "etcd unreachable" and applied nowhere;
// nothing is lost. etcd back on the same ports and data: within a second
// every node reaches it and all route alike with equal fingerprints, and a
// drain posted to one node runs on all three.
func TestThreeNodesEtcdOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("three clb processes, etcd and three instances under load")
	}
	s := startUnderLoad(t)
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}

	const outage = 10 * time.Second
	for _, l := range s.logs {
		l.Mark()
	}
	s.etcd.Stop()
	stopped := time.Now()
	for i, nd := range s.nodes {
		// A line logged before the stop (an answer slower than
		// dial_timeout on a busy machine) is followed by one saying etcd
		// is reachable: the status tells them apart.
		for {
			s.logs[i].Await(t, "etcd unreachable; routing on the last state known", 10*time.Second)
			if st := nd.status(t); st.Etcd != nil && !st.Etcd.Reachable && st.Etcd.Error != "" {
				break
			}
		}
	}
	code, body := adminCall(t, s.nodes[1].admin, "POST", "/api/v1/instances/inst1/drain", nil)
	if code != 503 || !strings.Contains(body, `"error": "etcd unreachable: `) {
		t.Errorf("drain with etcd gone: %d %s, want 503 etcd unreachable", code, body)
	}
	for _, nd := range s.nodes {
		if st := byName(nd.status(t), "inst1"); st.State != "up" {
			t.Errorf("node %s: inst1 is %s after the refused drain, want up", nd.name, st.State)
		}
	}
	routeAlike(t, s.nodes, keys, time.Second)
	for time.Since(stopped) < outage {
		s.web.await(t, 1) // the load goes on through the outage
	}
	s.sip.await(t, 1)

	for _, l := range s.logs {
		l.Mark()
	}
	s.etcd.Start()
	back := time.Now()
	t.Logf("etcd down for %v", back.Sub(stopped).Round(time.Millisecond))
	var reached time.Duration
	for i, nd := range s.nodes {
		s.logs[i].Await(t, "etcd reachable", 10*time.Second)
		if reached = time.Since(back); reached > time.Second {
			t.Errorf("node %s reached etcd again %v after it returned, want within a second", nd.name, reached)
		}
	}
	routeAlike(t, s.nodes, keys, time.Second)
	alike := time.Since(back)
	if alike > time.Second {
		t.Errorf("the nodes route alike %v after etcd returned, want within a second", alike)
	}
	t.Logf("after etcd's return: every node reached it within %v, all route alike at %v",
		reached.Round(time.Millisecond), alike.Round(time.Millisecond))
	if code, body := adminCall(t, s.nodes[2].admin, "POST", "/api/v1/instances/inst1/drain", nil); code != 200 {
		t.Fatalf("drain on C after etcd's return: %d %s", code, body)
	}
	for _, nd := range s.nodes[:2] {
		watch(t, nd.admin, 5*time.Second, func(st admin.Status) bool { return byName(st, "inst1").State == "draining" })
	}
	sameInstanceOn(t, s.nodes, "inst1", "draining")
	s.await(2, 1)
	o := s.end(func(*dialogRecord, exchange) bool { return false })
	t.Logf("through the outage and a drain after it: %v", o)
}
