package etcdstate_test

import (
	"errors"
	"testing"
	"time"

	"clb/balancer"
	"clb/etcdstate/etcdtest"
)

// TestClusterWeightOnEveryNode: a cluster's weight set on node A (SPEC
// section 13's upgrade: blue closed) is written to etcd and applied by node
// B from its watch; both then route alike; an unknown cluster is refused.
func TestClusterWeightOnEveryNode(t *testing.T) {
	etcd := etcdtest.Start(t)
	in := file()
	for i := range in {
		in[i].Cluster = []string{"blue", "green", "blue"}[i]
	}
	weights := map[string]int{"blue": 100, "green": 100}
	a := startNodeWith(t, etcd.URL(), "a", in, weights)
	b := startNodeWith(t, etcd.URL(), "b", in, weights)

	b.log.Mark()
	if err := a.state.SetClusterWeight("blue", 0); err != nil {
		t.Fatal(err)
	}
	b.log.Await(t, "cluster weight applied", 10*time.Second)
	now := time.Now()
	for name, n := range map[string]*node{"A": a, "B": b} {
		if c, ok := n.bal.Table().Cluster("blue"); !ok || c.Weight != 0 {
			t.Errorf("node %s: blue %+v, want weight 0", name, c)
		}
	}
	if fa, fb := a.bal.Table().Fingerprint(now), b.bal.Table().Fingerprint(now); fa != fb {
		t.Errorf("fingerprints %016x and %016x after the weight change", fa, fb)
	}
	if err := a.state.SetClusterWeight("purple", 10); !errors.Is(err, balancer.ErrUnknownCluster) {
		t.Errorf("unknown cluster: %v, want ErrUnknownCluster", err)
	}
	// A node started later applies the weight etcd holds.
	c := startNodeWith(t, etcd.URL(), "c", in, weights)
	if cl, _ := c.bal.Table().Cluster("blue"); cl.Weight != 0 {
		t.Errorf("a node started later: blue weight %d, want 0", cl.Weight)
	}
}
