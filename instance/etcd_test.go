package instance

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"clb/etcdstate"
	"clb/etcdstate/etcdtest"
)

// TestRegister: an instance registers its addresses, weight 100 and start
// time under PREFIX/instances/NAME with a lease, and a clean stop deletes
// the entry at once.
func TestRegister(t *testing.T) {
	etcd := etcdtest.Start(t)
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.URL()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	events := client.Watch(wctx, "/x/instances/i1")

	in, err := New(Options{Name: "i1", SIP: "127.0.0.1:0", HTTP: "127.0.0.1:0", Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	serving := make(chan error, 1)
	go func() { serving <- in.Serve(ctx) }()
	done := in.Register(ctx, []string{etcd.URL()}, "/x/", zaptest.NewLogger(t))

	ev := next(t, events)
	if ev.Type != clientv3.EventTypePut || ev.Kv.Lease == 0 {
		t.Fatalf("event %v lease %x, want a put under a lease", ev.Type, ev.Kv.Lease)
	}
	var reg etcdstate.Registration
	if err := json.Unmarshal(ev.Kv.Value, &reg); err != nil {
		t.Fatal(err)
	}
	if reg.SIP != in.SIPAddr() || reg.HTTP != in.HTTPAddr() || reg.Weight != 100 || !reg.Started.Equal(in.Started()) {
		t.Errorf("registration %+v, want sip %s http %s weight 100 started %v", reg, in.SIPAddr(), in.HTTPAddr(), in.Started())
	}
	cancel()
	<-done
	if ev := next(t, events); ev.Type != clientv3.EventTypeDelete {
		t.Errorf("after the stop: %v, want the entry deleted", ev.Type)
	}
	if err := <-serving; err != nil {
		t.Error(err)
	}
}

func next(t *testing.T, events clientv3.WatchChan) *clientv3.Event {
	t.Helper()
	select {
	case res := <-events:
		if len(res.Events) == 0 {
			t.Fatalf("watch: %v", res.Err())
		}
		return res.Events[0]
	case <-time.After(10 * time.Second):
		t.Fatal("no event in 10 s")
	}
	return nil
}
