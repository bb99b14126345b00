package etcdstate_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"clb/balancer"
	"clb/config"
	"clb/etcdstate"
	"clb/etcdstate/etcdtest"
	"clb/loadfactor"
	"clb/membership"
)

var params = loadfactor.Params{Start: 0.25, Increase: 0.25, Period: time.Second}

// node is what of a clb node the tests need: a balancer fed by a membership
// fan-out whose sources are the file and etcd.
type node struct {
	bal   *balancer.Balancer
	state *etcdstate.State
	log   *etcdtest.Log
	lists chan []config.Instance // every list the fan-out hands on
}

func file() []config.Instance {
	var out []config.Instance
	for i, name := range []string{"a", "b", "c"} {
		var inst config.Instance
		inst.Name, inst.Weight = name, 100
		inst.HTTP.Endpoint = config.Endpoint{Transport: "http", Host: "127.0.0.1", Port: 8081 + i}
		out = append(out, inst)
	}
	return out
}

// startNode runs a node against etcd until the test ends, and waits for it
// to have read etcd once.
func startNode(t *testing.T, endpoint, name string) *node {
	t.Helper()
	return startNodeWith(t, endpoint, name, file(), nil)
}

// startNodeWith is startNode with the file's instances in and, if weights
// is set, its clusters' weights.
func startNodeWith(t *testing.T, endpoint, name string, in []config.Instance, weights map[string]int) *node {
	t.Helper()
	bal, err := balancer.NewClusters(in, weights, params)
	if err != nil {
		t.Fatal(err)
	}
	logger, log := etcdtest.NewLog(t)
	n := &node{bal: bal, log: log, lists: make(chan []config.Instance, 100)}
	n.state = etcdstate.New(etcdstate.Options{
		Config:   config.Etcd{Endpoints: []string{endpoint}, Prefix: "/clb/", DialTimeout: 500 * time.Millisecond},
		Balancer: bal,
		Logger:   logger.Named(name),
	})
	n.state.SetInstances(in)
	fan := membership.New(membership.Options{
		Gate:        func(in []config.Instance) error { return bal.Update(in, params, time.Now()) },
		Subscribers: []func([]config.Instance){n.state.SetInstances, func(in []config.Instance) { n.lists <- in }},
	})
	fan.Source("file", in)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fan.Run(ctx, "etcd", n.state) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	log.Await(t, "etcd reachable", 10*time.Second)
	<-n.lists // the first snapshot of etcd's
	return n
}

func (n *node) instance(t *testing.T, name string, now time.Time) balancer.InstanceStatus {
	t.Helper()
	for _, st := range n.bal.Table().Status(now) {
		if st.Instance.Name == name {
			return st
		}
	}
	t.Fatalf("%s is not in the table", name)
	return balancer.InstanceStatus{}
}

// agree checks that two nodes give name the same state and load factor,
// and have the same fingerprint, at each moment of a ramp's steps.
func agree(t *testing.T, a, b *node, name string, from time.Time) {
	t.Helper()
	for step := range 6 {
		now := from.Add(time.Duration(step) * params.Period / 2)
		sa, sb := a.instance(t, name, now), b.instance(t, name, now)
		if sa.State != sb.State || sa.Factor != sb.Factor {
			t.Errorf("%s at %v: %v f=%v on one node, %v f=%v on the other", name, now, sa.State, sa.Factor, sb.State, sb.Factor)
		}
		if fa, fb := a.bal.Table().Fingerprint(now), b.bal.Table().Fingerprint(now); fa != fb {
			t.Errorf("at %v: fingerprints %016x and %016x", now, fa, fb)
		}
	}
}

// TestActionRunsOnEveryNode: a drain acted on node A is written to etcd and
// runs on node B from the same moment: both say draining, with the same
// load factor at every step, and the same fingerprint; an enable likewise.
// A node that starts later applies the actions etcd holds, to the same
// effect.
func TestActionRunsOnEveryNode(t *testing.T) {
	etcd := etcdtest.Start(t)
	a, b := startNode(t, etcd.URL(), "a"), startNode(t, etcd.URL(), "b")

	b.log.Mark()
	at := time.Now()
	if err := a.state.Act("b", "drain", at); err != nil {
		t.Fatal(err)
	}
	if st := a.instance(t, "b", at); st.State != balancer.Draining {
		t.Errorf("on A after the drain: %v, want draining", st.State)
	}
	b.log.Await(t, "admin action applied", 5*time.Second)
	if st := b.instance(t, "b", at); st.State != balancer.Draining || st.Factor != 1-params.Increase {
		t.Errorf("on B after the drain: %v f=%v, want draining at %v", st.State, st.Factor, 1-params.Increase)
	}
	agree(t, a, b, "b", at)

	c := startNode(t, etcd.URL(), "c")
	agree(t, a, c, "b", at)

	a.log.Mark()
	c.log.Mark()
	at = time.Now()
	if err := b.state.Act("b", "enable", at); err != nil {
		t.Fatal(err)
	}
	a.log.Await(t, "admin action applied", 5*time.Second)
	c.log.Await(t, "admin action applied", 5*time.Second)
	agree(t, a, b, "b", at)
	agree(t, a, c, "b", at)

	if err := a.state.Act("nope", "drain", at); !errors.Is(err, balancer.ErrUnknownInstance) {
		t.Errorf("drain of an unknown instance: %v, want %v", err, balancer.ErrUnknownInstance)
	}
}

// TestUnreachable: with etcd gone the node keeps its table, says etcd is
// unreachable, and refuses an action (changing nothing); when etcd returns
// it says so and actions run on every node again.
func TestUnreachable(t *testing.T) {
	etcd := etcdtest.Start(t)
	a, b := startNode(t, etcd.URL(), "a"), startNode(t, etcd.URL(), "b")
	if st := a.state.Status(); !st.Reachable || st.Error != "" || st.Revision == 0 {
		t.Errorf("status %+v, want reachable at a revision", st)
	}
	version := a.bal.Table().Version()

	etcd.Stop()
	a.log.Await(t, "etcd unreachable", 10*time.Second)
	if st := a.state.Status(); st.Reachable || st.Error == "" || a.state.Up() {
		t.Errorf("status %+v with etcd gone, want unreachable with the error", st)
	}
	err := a.state.Act("b", "drain", time.Now())
	if !errors.Is(err, etcdstate.ErrUnreachable) {
		t.Errorf("drain with etcd gone: %v, want %v", err, etcdstate.ErrUnreachable)
	}
	if v := a.bal.Table().Version(); v != version {
		t.Errorf("table version %d after a refused drain, want %d: the node changed", v, version)
	}

	etcd.Start()
	a.log.Await(t, "etcd reachable", 10*time.Second)
	b.log.Await(t, "etcd reachable", 10*time.Second)
	b.log.Mark()
	at := time.Now()
	if err := a.state.Act("b", "drain", at); err != nil {
		t.Fatal(err)
	}
	b.log.Await(t, "admin action applied", 5*time.Second)
	agree(t, a, b, "b", at)
}

// TestRegistration: an instance that registers joins every node's table,
// ramped from its started time alike on each; one that deregisters (or
// whose lease expires, which etcd reports the same way: a delete) leaves.
func TestRegistration(t *testing.T) {
	etcd := etcdtest.Start(t)
	a, b := startNode(t, etcd.URL(), "a"), startNode(t, etcd.URL(), "b")

	started := time.Now().UTC().Round(time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	registered := make(chan struct{}, 10)
	var wg sync.WaitGroup
	wg.Go(func() {
		err := etcdstate.Register(ctx, etcdstate.Registrant{
			Endpoints: []string{etcd.URL()}, Name: "d",
			Registration: etcdstate.Registration{HTTP: "http://127.0.0.1:8091", Weight: 50, Started: started},
		}, func() { registered <- struct{}{} })
		if err != nil {
			t.Error(err)
		}
	})
	defer wg.Wait()
	defer cancel()
	<-registered
	for _, n := range []*node{a, b} {
		if names := listNames(<-n.lists); names != "a b c d" {
			t.Errorf("instances %s, want a b c d", names)
		}
		if st := n.instance(t, "d", started); st.State != balancer.Ramping || st.Instance.Weight != 50 || st.Factor != params.Start {
			t.Errorf("d: %v weight %d f=%v, want ramping, weight 50, f=%v from its start", st.State, st.Instance.Weight, st.Factor, params.Start)
		}
	}
	agree(t, a, b, "d", started)

	cancel()
	wg.Wait()
	for _, n := range []*node{a, b} {
		if names := listNames(<-n.lists); names != "a b c" {
			t.Errorf("instances %s after d deregistered, want a b c", names)
		}
	}
}

// TestBadValuesIgnored: values that do not parse are logged and change
// nothing: no instance state, no registration.
func TestBadValuesIgnored(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := startNode(t, etcd.URL(), "a")
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.URL()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, kv := range [][2]string{
		{"/clb/admin/a", `{"state": "explode", "at": "2026-01-01T00:00:00Z"}`},
		{"/clb/admin/b", `not json`},
		{"/clb/instances/e", `{"http": "ftp://x"}`},
	} {
		if _, err := client.Put(ctx, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	a.log.Await(t, "bad admin action", 5*time.Second)
	a.log.Await(t, "bad admin action", 5*time.Second)
	a.log.Await(t, "bad instance registration", 5*time.Second)
	now := time.Now()
	for _, name := range []string{"a", "b"} {
		if st := a.instance(t, name, now); st.State != balancer.Up {
			t.Errorf("%s: %v after a bad action, want up", name, st.State)
		}
	}
	if names := listNames(<-a.lists); names != "a b c" {
		t.Errorf("instances %s, want a b c", names)
	}
	if st := a.state.Status(); !st.Reachable {
		t.Errorf("status %+v", st)
	}
}

func listNames(list []config.Instance) string {
	s := ""
	for i, inst := range list {
		if i > 0 {
			s += " "
		}
		s += inst.Name
	}
	return s
}
