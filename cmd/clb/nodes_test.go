package main

// The multi-node proofs of issue 11 (SPEC section 11), with real processes
// on loopback: three clb nodes (this test binary run as clb run, so that
// one can be killed with SIGKILL), one etcd, three sample instances
// (processes too), SIP clients that move to another node's address when a
// transaction goes unanswered, HTTP clients that reconnect to another node.

import (
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
	paths []string // each node's configuration file
	sip   []string // each node's SIP address: 127.0.0.N and one port
	http  []string // each node's HTTP front end, as a base URL
}

// nodesYAML is the nodes' health and ramp: an instance is marked down
// 0.6 s after it dies, and ramps up over 3 s.
const nodesYAML = `health: {interval: 200ms, timeout: 200ms, rise: 1, fall: 3}
loadfactor: {start: 0.25, increase: 0.25, period: 1s}
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
		s.http = append(s.http, fmt.Sprintf("http://127.0.0.1:%d", freeTCPPort(t)))
		yaml := fmt.Sprintf(`listen:
  sip: [udp://%s]
  http: %s
  admin: 127.0.0.1:%d
  advertise: %s
etcd: {endpoints: [%s], dial_timeout: 500ms}
%sinstances:
%s`, s.sip[i], strings.TrimPrefix(s.http[i], "http://"), freeTCPPort(t), advertised, s.etcd.URL(), nodesYAML, list.String())
		path := filepath.Join(dir, fmt.Sprintf("node%d.yaml", i))
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		s.paths = append(s.paths, path)
		s.nodes = append(s.nodes, nil)
		s.start(i)
	}
	// The instances find their partners through the last node's admin
	// API (they keep the addresses once they have them).
	s.inst.admin = "http://" + s.nodes[n-1].admin
	for _, stdin := range stdins {
		_, _ = io.WriteString(stdin, s.inst.admin+"\n")
		stdin.Close()
	}
	for _, nd := range s.nodes {
		watch(t, nd.admin, 10*time.Second, func(st admin.Status) bool { return allUp(st, len(instances)) })
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
	go func() {
		for range nd.lines {
		}
	}()
	s.nodes[i] = nd
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
	s.nodes[i].signal(syscall.SIGTERM)
	select {
	case err := <-s.nodes[i].done:
		if err != nil {
			s.t.Errorf("node %s: %v after SIGTERM", s.nodes[i].name, err)
		}
	case <-time.After(20 * time.Second):
		s.t.Fatalf("node %s did not stop within 20 s of SIGTERM", s.nodes[i].name)
	}
	s.start(i)
	watch(s.t, s.nodes[i].admin, 10*time.Second, func(st admin.Status) bool { return allUp(st, len(s.names)) })
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

func allUp(st admin.Status, n int) bool {
	up := 0
	for _, i := range st.Instances {
		if i.State == "up" {
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

// freeTCPPort is a loopback TCP port free now.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
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
