package etcdstate_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"clb/balancer"
	"clb/etcdstate/etcdtest"
)

// TestCatchUpAfterCompaction: a node cut off from etcd while actions were
// written and the history compacted cannot resume its watch from the
// revision it last saw; it loads the prefix again and applies the latest
// action per instance, from that action's at, as the node that stayed did.
func TestCatchUpAfterCompaction(t *testing.T) {
	etcd := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, etcd.URL()[len("http://"):])
	a, b := startNode(t, etcd.URL(), "a"), startNode(t, proxy.URL(), "b")

	proxy.Cut()
	b.log.Await(t, "etcd unreachable", 10*time.Second)
	at := time.Now()
	if err := a.state.Act("a", "drain", at.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := a.state.Act("b", "disable", at); err != nil {
		t.Fatal(err)
	}
	if err := a.state.Act("a", "enable", at); err != nil { // the latest for a
		t.Fatal(err)
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.URL()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := client.Get(ctx, "/clb/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Compact(ctx, res.Header.Revision); err != nil {
		t.Fatal(err)
	}

	b.log.Mark()
	proxy.Restore()
	b.log.Await(t, "etcd watch ended; loading the prefix again", 10*time.Second)
	b.log.Await(t, "admin action applied", 5*time.Second)
	b.log.Await(t, "admin action applied", 5*time.Second)
	if st := b.instance(t, "b", at); st.State != balancer.Disabled {
		t.Errorf("b on the node that caught up: %v, want disabled", st.State)
	}
	agree(t, a, b, "a", at)
	agree(t, a, b, "b", at)
}

// TestWatchResumedAcrossRestart: an etcd restart breaks a node's watch,
// which resumes from the revision after the last it had: the node does not
// load the prefix again (it would hand the fan-out a list), and what is
// written after the restart runs on it.
func TestWatchResumedAcrossRestart(t *testing.T) {
	etcd := etcdtest.Start(t)
	a, b := startNode(t, etcd.URL(), "a"), startNode(t, etcd.URL(), "b")
	if err := a.state.Act("a", "drain", time.Now()); err != nil {
		t.Fatal(err)
	}
	b.log.Await(t, "admin action applied", 5*time.Second)

	etcd.Stop()
	b.log.Await(t, "etcd unreachable", 10*time.Second)
	etcd.Start()
	a.log.Await(t, "etcd reachable", 10*time.Second)
	b.log.Await(t, "etcd reachable", 10*time.Second)
	at := time.Now()
	if err := a.state.Act("b", "drain", at); err != nil {
		t.Fatal(err)
	}
	line := b.log.Await(t, "admin action applied", 5*time.Second)
	if st := b.instance(t, "b", at); st.State != balancer.Draining {
		t.Errorf("b on the node whose watch resumed: %v, want draining (%s)", st.State, line)
	}
	select {
	case list := <-b.lists:
		t.Errorf("the node handed on %s after etcd's restart: it loaded the prefix again", listNames(list))
	default:
	}
	agree(t, a, b, "b", at)
}
