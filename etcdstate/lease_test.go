package etcdstate_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"clb/config"
	"clb/etcdstate"
	"clb/etcdstate/etcdtest"
)

// TestRegistrationLeaseLost: an instance whose lease etcd no longer has
// (revoked here; expired, to etcd, is the same) leaves every node's table,
// registers again under a new lease and returns; its first endpoint down
// changes nothing, the next one serves.
func TestRegistrationLeaseLost(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := startNode(t, etcd.URL(), "a")
	down := fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t))

	ctx, cancel := context.WithCancel(context.Background())
	registered := make(chan struct{}, 10)
	var wg sync.WaitGroup
	wg.Go(func() {
		err := etcdstate.Register(ctx, etcdstate.Registrant{
			Endpoints: []string{down, etcd.URL()}, Name: "d", TTL: 2 * time.Second,
			Registration: etcdstate.Registration{HTTP: "http://127.0.0.1:8091", Weight: 50, Started: time.Now()},
		}, func() { registered <- struct{}{} })
		if err != nil {
			t.Error(err)
		}
	})
	defer wg.Wait()
	defer cancel()
	awaitSignal(t, registered)
	awaitList(t, a.lists, "a b c d")
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.URL()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	first := leaseOf(t, client, "/clb/instances/d")
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	if _, err := client.Revoke(rctx, clientv3.LeaseID(first)); err != nil {
		t.Fatal(err)
	}
	awaitList(t, a.lists, "a b c")
	awaitSignal(t, registered)
	awaitList(t, a.lists, "a b c d")
	if again := leaseOf(t, client, "/clb/instances/d"); again == 0 || again == first {
		t.Errorf("registered again under lease %x, want a new one (the lost one was %x)", again, first)
	}

	cancel()
	wg.Wait()
	awaitList(t, a.lists, "a b c")
}

func awaitSignal(t *testing.T, c <-chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatal("not registered in 10 s")
	}
}

func awaitList(t *testing.T, lists <-chan []config.Instance, want string) {
	t.Helper()
	select {
	case list := <-lists:
		if names := listNames(list); names != want {
			t.Fatalf("instances %s, want %s", names, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no list in 10 s, want %s", want)
	}
}

// leaseOf is the lease key is written under.
func leaseOf(t *testing.T, client *clientv3.Client, key string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := client.Get(ctx, key)
	if err != nil || len(res.Kvs) != 1 {
		t.Fatalf("get %s: %v, %v", key, res, err)
	}
	return res.Kvs[0].Lease
}
