package balancer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"clb/config"
	"clb/loadfactor"
)

// clustered is n instances in each named cluster, names "CLUSTERi".
func clustered(n int, clusters ...string) []config.Instance {
	var in []config.Instance
	for _, c := range clusters {
		for i := range n {
			in = append(in, config.Instance{Name: fmt.Sprintf("%s%d", c, i), Weight: 100, Cluster: c,
				SIP:  config.SIPAddr{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1", Port: 6000 + len(in)}},
				HTTP: config.HTTPAddr{Endpoint: config.Endpoint{Transport: "http", Host: "127.0.0.1", Port: 7000 + len(in)}}})
		}
	}
	return in
}

func clusterBalancer(t testing.TB, in []config.Instance, weights map[string]int) *Balancer {
	t.Helper()
	b := mustBalancer(t, in, loadfactor.DefaultParams())
	if err := b.SetClusterWeights(weights); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClusterSpreadByWeight: new sessions spread over the clusters by their
// weights, within 2% of each cluster's share, and inside each cluster over
// its instances by theirs, within 2%: the cluster choice is independent of
// the instance a key's slot prefers.
func TestClusterSpreadByWeight(t *testing.T) {
	in := clustered(4, "blue", "green", "red")
	for _, weights := range []map[string]int{
		{"blue": 100, "green": 100, "red": 100},
		{"blue": 100, "green": 300, "red": 0},
		{"blue": 10, "green": 30, "red": 60},
	} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			tb := clusterBalancer(t, in, weights).Table()
			total := 0
			for _, w := range weights {
				total += w
			}
			const keys = 400_000
			byCluster, byInstance := map[string]int{}, map[string]int{}
			r := rand.New(rand.NewPCG(1, 2))
			for range keys {
				d := tb.RouteHash(r.Uint64(), "", epoch())
				byCluster[d.Owner.Cluster]++
				byInstance[d.Owner.Name]++
			}
			for c, w := range weights {
				want := float64(w) / float64(total)
				got := float64(byCluster[c]) / keys
				if math.Abs(got-want) > 0.02*want || w == 0 && byCluster[c] != 0 {
					t.Errorf("cluster %s (weight %d): share %.4f, want %.4f within 2%%", c, w, got, want)
				}
				for i := range 4 {
					name := fmt.Sprintf("%s%d", c, i)
					got := float64(byInstance[name]) / float64(max(byCluster[c], 1))
					if w > 0 && math.Abs(got-0.25) > 0.02*0.25 {
						t.Errorf("%s: share of its cluster's keys %.4f, want 0.25 within 2%%", name, got)
					}
				}
			}
			for _, c := range tb.Clusters() {
				if want := float64(weights[c.Name]) / float64(total); math.Abs(c.Share-want) > 1e-9 {
					t.Errorf("status: cluster %s share %v, want %v", c.Name, c.Share, want)
				}
			}
		})
	}
}

// TestClusterWeightMovesOnlyNewSessions: closing blue (weight 0) and
// opening it again moves no session that names its instance (same owner,
// same replica partner), and moves new sessions only away from blue and
// back; a converged session's SIP and HTTP requests stay in one cluster.
func TestClusterWeightMovesOnlyNewSessions(t *testing.T) {
	b := clusterBalancer(t, clustered(3, "blue", "green", "red"), map[string]int{"blue": 100, "green": 100, "red": 50})
	r := rand.New(rand.NewPCG(3, 4))
	now := epoch()
	type session struct {
		key            string
		owner, replica string
	}
	before := b.Table()
	var sessions []session
	for k := range 20_000 {
		key := fmt.Sprintf("user:%d:%x", k, r.Uint32())
		d := before.Route(key, "", now)
		if s := before.RouteFor(SIP, key, "", now); s.Owner.Cluster != d.Owner.Cluster {
			t.Fatalf("key %s: SIP in %s, any in %s", key, s.Owner.Cluster, d.Owner.Cluster)
		}
		if h := before.RouteFor(HTTP, key, "", now); h.Owner.Cluster != d.Owner.Cluster {
			t.Fatalf("key %s: HTTP in %s, any in %s", key, h.Owner.Cluster, d.Owner.Cluster)
		}
		sessions = append(sessions, session{key, d.Owner.Name, d.Replica.Name})
	}
	for _, w := range []int{0, 300, 100} {
		must(t, b.SetClusterWeight("blue", w))
		after := b.Table()
		for _, s := range sessions {
			d := after.Route(s.key, s.owner, now)
			if d.Owner.Name != s.owner || d.Replica.Name != s.replica || d.Repaired {
				t.Fatalf("blue at %d: session %s on %s/%s went to %s/%s", w, s.key, s.owner, s.replica, name(d.Owner), name(d.Replica))
			}
			was, is := before.Route(s.key, "", now).Owner, after.Route(s.key, "", now).Owner
			if was.Name != is.Name && was.Cluster != "blue" && is.Cluster != "blue" {
				t.Fatalf("blue at %d: new session %s moved from %s to %s", w, s.key, was.Name, is.Name)
			}
			if w == 0 && is.Cluster == "blue" {
				t.Fatalf("blue closed: new session %s started on %s", s.key, is.Name)
			}
		}
	}
	if err := b.SetClusterWeight("purple", 1); !errors.Is(err, ErrUnknownCluster) {
		t.Errorf("weight of an unknown cluster: %v", err)
	}
	if err := b.SetClusterWeight("blue", -1); !errors.Is(err, ErrBadWeight) {
		t.Errorf("negative weight: %v", err)
	}
}

// TestClosedClusterKeepsItsSessions: with blue closed, a session named to
// blue stays in blue; when its owner fails, it goes to its replica partner
// in blue (SPEC section 1 within the cluster), never to green; with every
// instance of blue down it gets no owner while blue is open (the front ends
// answer 503), and starts in green once blue is closed.
func TestClosedClusterKeepsItsSessions(t *testing.T) {
	b := clusterBalancer(t, clustered(4, "blue", "green"), map[string]int{"blue": 100, "green": 100})
	now := epoch()
	type session struct{ key, owner, replica string }
	var blue []session
	for k := 0; len(blue) < 5_000; k++ {
		key := fmt.Sprintf("k%d", k)
		if d := b.Table().Route(key, "", now); d.Owner.Cluster == "blue" {
			blue = append(blue, session{key, d.Owner.Name, d.Replica.Name})
		}
	}
	must(t, b.SetClusterWeight("blue", 0))
	must(t, b.SetHealth("blue1", false, now))
	tb := b.Table()
	moved := 0
	for _, s := range blue {
		d := tb.Route(s.key, s.owner, now)
		switch {
		case d.Owner.Cluster != "blue" || d.Replica == nil || d.Replica.Cluster != "blue":
			t.Fatalf("session %s of blue went to %s, replica %s", s.key, name(d.Owner), name(d.Replica))
		case s.owner == "blue1" && d.Owner.Name != s.replica:
			t.Fatalf("session %s: blue1 failed, went to %s, not its replica partner %s", s.key, d.Owner.Name, s.replica)
		case s.owner != "blue1" && d.Owner.Name != s.owner:
			t.Fatalf("session %s moved from %s to %s", s.key, s.owner, d.Owner.Name)
		case s.owner == "blue1":
			moved++
			if d.Previous == nil || d.Previous.Name != "blue1" || !d.Repaired {
				t.Fatalf("session %s: previous %v, repaired %v", s.key, d.Previous, d.Repaired)
			}
		}
		// The retry after the owner cannot be reached stays in blue too.
		if w := tb.RouteWithout(HTTP, s.key, d.Owner.Name, now); w.Owner != nil && w.Owner.Cluster != "blue" {
			t.Fatalf("session %s: retry off %s went to %s", s.key, d.Owner.Name, w.Owner.Name)
		}
	}
	if moved == 0 {
		t.Fatal("no session of blue1's")
	}

	for i := range 4 {
		must(t, b.SetHealth(fmt.Sprintf("blue%d", i), false, now))
	}
	s := blue[0]
	if d := b.Table().Route(s.key, s.owner, now); d.Owner == nil || d.Owner.Cluster != "green" || d.Previous.Name != s.owner {
		t.Errorf("blue closed and down: session %s went to %s, previous %v", s.key, name(d.Owner), d.Previous)
	}
	must(t, b.SetClusterWeight("blue", 100))
	if d := b.Table().Route(s.key, s.owner, now); d.Owner != nil {
		t.Errorf("blue open and down: session %s went to %s, want none (503)", s.key, d.Owner.Name)
	}
	// New sessions whose first cluster is down start in the next.
	for k := range 1000 {
		if d := b.Table().Route(fmt.Sprintf("new%d", k), "", now); d.Owner == nil || d.Owner.Cluster != "green" {
			t.Fatalf("new session with blue down: %s", name(d.Owner))
		}
	}
}

// TestClustersStatus: clusters are listed by name with their instances and
// weights; a single-cluster file is the one cluster "default", whose routes
// are those of no cluster at all; closing every cluster leaves new sessions
// without an owner and named ones where they were.
func TestClustersStatus(t *testing.T) {
	b := clusterBalancer(t, clustered(2, "green", "blue"), map[string]int{"blue": 0, "green": 100, "empty": 100})
	cs := b.Table().Clusters()
	got := ""
	for _, c := range cs {
		got += fmt.Sprintf("%s:%d:%.2f:%v ", c.Name, c.Weight, c.Share, c.Instances)
	}
	if want := "blue:0:0.00:[blue0 blue1] empty:100:0.00:[] green:100:1.00:[green0 green1] "; got != want {
		t.Errorf("clusters %q, want %q", got, want)
	}
	for k := range 1000 {
		if d := b.Table().Route(fmt.Sprint(k), "", epoch()); d.Owner.Cluster != "green" {
			t.Fatalf("new session in %s: green is the only open cluster with instances", d.Owner.Cluster)
		}
	}
	must(t, b.SetClusterWeight("green", 0))
	if d := b.Table().Route("x", "", epoch()); d.Owner != nil {
		t.Errorf("every cluster closed: new session went to %s", d.Owner.Name)
	}
	if d := b.Table().Route("x", "blue1", epoch()); d.Owner == nil || d.Owner.Cluster != "blue" {
		t.Errorf("every cluster closed: session of blue1 went to %s", name(d.Owner))
	}

	single := mustBalancer(t, instances(4), loadfactor.DefaultParams())
	cs = single.Table().Clusters()
	if len(cs) != 1 || cs[0].Name != config.DefaultCluster || cs[0].Weight != 100 || len(cs[0].Instances) != 4 || !single.Table().simple {
		t.Errorf("single cluster %+v", cs)
	}
	must(t, single.SetClusterWeight(config.DefaultCluster, 0))
	if d := single.Table().Route("x", "", epoch()); d.Owner != nil {
		t.Errorf("default closed: new session went to %s", d.Owner.Name)
	}
	if d := single.Table().Route("x", "inst2", epoch()); d.Owner == nil {
		t.Error("default closed: a session of inst2 got no owner")
	}
}

// TestClusterDrainsAndWhatIf: a what-if and the drains of several clusters
// are within one cluster: removing an instance moves its keys to their
// replica partners, in its cluster.
func TestClusterDrainsAndWhatIf(t *testing.T) {
	tb := clusterBalancer(t, clustered(3, "blue", "green"), map[string]int{"blue": 100, "green": 100}).Table()
	e, err := tb.WhatIf(Change{Remove: []string{"blue0"}}, epoch())
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(e.Moved-1.0/3) > 0.01 || e.ToReplica != e.Moved || e.Unsafe != 0 {
		t.Errorf("what-if remove blue0: %+v", e)
	}
	for _, f := range e.Flows {
		if f.From != "blue0" || f.To != "blue1" && f.To != "blue2" {
			t.Errorf("flow %+v", f)
		}
	}
	if _, err := tb.WhatIf(Change{Remove: []string{"blue0", "green0"}}, epoch()); !errors.Is(err, ErrBadChange) {
		t.Errorf("what-if across clusters: %v", err)
	}
	if _, err := tb.WhatIf(Change{Add: nil, Cluster: "purple", Remove: []string{"blue0"}}, epoch()); !errors.Is(err, ErrUnknownCluster) {
		t.Errorf("what-if in an unknown cluster: %v", err)
	}
	for _, d := range tb.Drains(epoch()) {
		if math.Abs(d.Moved-1.0/3) > 0.01 || d.ToReplica != d.Moved {
			t.Errorf("drain %s: %+v", d.Name, d.Effect)
		}
	}
}

// BenchmarkRouteClusters is BenchmarkRoute's cold set over two clusters of
// n instances each, one closed: the weighted choice of a new session's
// cluster, and a session that names its instance.
func BenchmarkRouteClusters(b *testing.B) {
	now := epoch()
	keys := benchKeys(1 << 16)
	for _, n := range []int{10, 100} {
		bal := clusterBalancer(b, clustered(n, "blue", "green"), map[string]int{"blue": 0, "green": 100})
		b.Run(fmt.Sprintf("new/N=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if d := bal.Route(keys[i&(1<<16-1)], "", now); d.Owner == nil {
					b.Fatal("no owner")
				}
			}
		})
		b.Run(fmt.Sprintf("named/N=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if d := bal.Route(keys[i&(1<<16-1)], "blue1", now); d.Owner == nil {
					b.Fatal("no owner")
				}
			}
		})
	}
}
