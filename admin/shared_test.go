package admin

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"clb/balancer"
)

// TestShared: with a shared state, enable, disable and drain go through its
// Act (with the action's name and the clock's time) instead of the
// balancer; its refusal for want of the store is a 503 carrying its text,
// an unknown instance a 404; the status carries the store's status.
func TestShared(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	type call struct {
		name, action string
		at           time.Time
	}
	var (
		mu     sync.Mutex // the handlers' goroutines and the test's
		calls  []call
		refuse error
		f      *fixture
	)
	setRefuse := func(err error) { mu.Lock(); refuse = err; mu.Unlock() }
	shared := &Shared{
		Act: func(name, action string, at time.Time) error {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, call{name, action, at})
			if refuse != nil {
				return refuse
			}
			return f.bal.Drain(name, at) // as the store's watch would
		},
		Status: func() SharedStatus {
			mu.Lock()
			defer mu.Unlock()
			if refuse != nil {
				return SharedStatus{Error: refuse.Error(), Revision: 7}
			}
			return SharedStatus{Reachable: true, Revision: 7}
		},
	}
	f = start(t, Options{Shared: shared, Now: func() time.Time { return now }})

	var is InstanceStatus
	if code, body := f.call("POST", "/api/v1/instances/a/drain", &is); code != 200 || is.State != "draining" {
		t.Fatalf("drain: %d %s", code, body)
	}
	mu.Lock()
	if len(calls) != 1 || calls[0] != (call{"a", "drain", now}) {
		t.Errorf("Act calls %v, want one: a drain at %v", calls, now)
	}
	mu.Unlock()
	if st := f.status(); st.Etcd == nil || !st.Etcd.Reachable || st.Etcd.Revision != 7 {
		t.Errorf("status etcd %+v, want reachable at revision 7", st.Etcd)
	}

	setRefuse(Unavailable(errors.New("etcd unreachable: context deadline exceeded")))
	code, body := f.call("POST", "/api/v1/instances/b/disable", nil)
	if code != 503 || !strings.Contains(body, `"error": "etcd unreachable: context deadline exceeded"`) {
		t.Errorf("disable with the store away: %d %s, want 503 with the error", code, body)
	}
	if st := stateOf(f.status(), "b"); st != "up" {
		t.Errorf("b is %s after a refused disable, want up", st)
	}
	if st := f.status(); st.Etcd == nil || st.Etcd.Reachable || !strings.Contains(st.Etcd.Error, "unreachable") {
		t.Errorf("status etcd %+v, want unreachable with the error", st.Etcd)
	}

	setRefuse(fmt.Errorf("%w %q", balancer.ErrUnknownInstance, "zz"))
	if code, body := f.call("POST", "/api/v1/instances/zz/enable", nil); code != 404 {
		t.Errorf("enable of an unknown instance: %d %s, want 404", code, body)
	}

	g := start(t, Options{})
	if st := g.status(); st.Etcd != nil {
		t.Errorf("status etcd %+v without a shared state, want none", st.Etcd)
	}
}

func stateOf(st Status, name string) string {
	for _, is := range st.Instances {
		if is.Name == name {
			return is.State
		}
	}
	return ""
}
