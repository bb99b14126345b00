package main

import (
	"strings"
	"testing"

	"clb/config"
)

const clustersFile = `listen: {sip: udp://127.0.0.1:5060, http: 127.0.0.1:8080}
clusters:
  - name: blue
    weight: 100
    instances:
      - {name: blue1, sip: 127.0.0.1:5071, http: http://127.0.0.1:8081}
      - {name: blue2, sip: 127.0.0.1:5072, http: http://127.0.0.1:8082}
  - name: green
    weight: 0
    instances:
      - {name: green1, sip: 127.0.0.1:5073, http: http://127.0.0.1:8083}
`

// TestRouteClusters: with a clusters: section clb route adds the owner's
// cluster as a fourth column, and new sessions go to the open cluster
// only; clb check lists the clusters.
func TestRouteClusters(t *testing.T) {
	path := writeFile(t, clustersFile)
	code, out, errOut := clb(t, "", "route", "-config", path, "alice", "bob", "carol")
	if code != 0 {
		t.Fatalf("route: %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("route printed %q", out)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 4 || f[3] != "blue" || !strings.HasPrefix(f[1], "blue") || !strings.HasPrefix(f[2], "blue") {
			t.Errorf("route line %q: want KEY OWNER REPLICA CLUSTER, in blue", l)
		}
	}
	code, out, _ = clb(t, "", "check", "-config", path)
	if code != 0 || !strings.Contains(out, "clusters: 2") || !strings.Contains(out, "green    0       0.0%") {
		t.Errorf("check: %d\n%s", code, out)
	}
}

// TestReloadedWeights: a reload applies the file's cluster weights, except
// where the file leaves a weight as it was: there the weight set at run
// time (an upgrade under way) stays.
func TestReloadedWeights(t *testing.T) {
	file := func(blue, green int) *config.Config {
		return &config.Config{Clusters: []config.Cluster{{Name: "blue", Weight: blue}, {Name: "green", Weight: green}}}
	}
	running := map[string]int{"blue": 0, "green": 100} // the operator closed blue
	got := reloadedWeights(file(100, 0), file(100, 0), running)
	if got["blue"] != 0 || got["green"] != 100 {
		t.Errorf("unchanged file: %v, want the run-time weights", got)
	}
	got = reloadedWeights(file(100, 0), file(0, 100), running)
	if got["blue"] != 0 || got["green"] != 100 {
		t.Errorf("file follows the upgrade: %v", got)
	}
	got = reloadedWeights(file(100, 0), file(50, 0), running)
	if got["blue"] != 50 || got["green"] != 100 {
		t.Errorf("file changes blue: %v, want blue 50 and green as set", got)
	}
	added := &config.Config{Clusters: []config.Cluster{{Name: "blue", Weight: 100}, {Name: "green", Weight: 0}, {Name: "red", Weight: 0}}}
	if got = reloadedWeights(file(100, 0), added, running); got["red"] != 0 || len(got) != 3 {
		t.Errorf("a cluster added: %v", got)
	}
}

// TestCtlWeight: clb ctl weight sets a cluster's weight through the admin
// API and says the cluster's share; an unknown cluster is refused (exit 1).
func TestCtlWeight(t *testing.T) {
	file := "listen: {http: 127.0.0.1:0, admin: 127.0.0.1:0}\nhealth: {active: false}\nclusters:\n" +
		"  - {name: blue, instances: [{name: a, http: http://127.0.0.1:1}]}\n" +
		"  - {name: green, weight: 0, instances: [{name: b, http: http://127.0.0.1:2}]}\n"
	p := startCLB(t, writeFile(t, file))
	addr := p.started["admin"].(string)
	code, out, errOut := clb(t, "", "ctl", "-admin", addr, "weight", "green", "300")
	if code != 0 || out != "green: weight 300, 75.0% of new sessions, 0 sessions in the last minute\n" {
		t.Errorf("ctl weight: exit %d, %q, stderr %q", code, out, errOut)
	}
	code, out, _ = clb(t, "", "ctl", "-admin", addr, "status", "-interval", "0")
	if code != 0 || !strings.Contains(out, "CLUSTER  WEIGHT  NEW SESSIONS  SESSIONS (1 MIN)  INSTANCES\nblue     100     25.0%         0                 a\ngreen    300     75.0%") {
		t.Errorf("ctl status: exit %d\n%s", code, out)
	}
	if code, _, errOut = clb(t, "", "ctl", "-admin", addr, "weight", "purple", "1"); code != 1 || !strings.Contains(errOut, "404") {
		t.Errorf("unknown cluster: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ = clb(t, "", "ctl", "-admin", addr, "weight", "green"); code != 2 {
		t.Errorf("a missing weight: exit %d, want 2", code)
	}
}
