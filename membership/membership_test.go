package membership

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"clb/config"
)

func inst(name string, port, weight int) config.Instance {
	return config.Instance{Name: name, Weight: weight,
		HTTP: config.HTTPAddr{Endpoint: config.Endpoint{Transport: "http", Host: "127.0.0.1", Port: port}}}
}

func names(in []config.Instance) string {
	var s []string
	for _, i := range in {
		s = append(s, fmt.Sprintf("%s:%d:%d", i.Name, i.HTTP.Port, i.Weight))
	}
	return strings.Join(s, " ")
}

// recorder is a gate and a subscriber that note what they were given.
type recorder struct {
	refuse error
	gated  []string
	heard  []string
}

func (r *recorder) options(log *zap.Logger) Options {
	return Options{
		Gate: func(in []config.Instance) error {
			r.gated = append(r.gated, names(in))
			return r.refuse
		},
		Subscribers: []func([]config.Instance){func(in []config.Instance) { r.heard = append(r.heard, names(in)) }},
		Logger:      log,
	}
}

// TestPublishHandsOnWholeLists: each publish hands the gate and then the
// subscribers the whole merged list; the file's initial list is not handed
// on (everything was built with it).
func TestPublishHandsOnWholeLists(t *testing.T) {
	var r recorder
	f := New(r.options(nil))
	file := f.Source("file", []config.Instance{inst("a", 1, 100), inst("b", 2, 100)})
	if got := names(f.Instances()); got != "a:1:100 b:2:100" || len(r.gated)+len(r.heard) != 0 {
		t.Fatalf("initial: %s, gated %v heard %v", got, r.gated, r.heard)
	}
	if err := file([]config.Instance{inst("b", 2, 50), inst("c", 3, 100)}); err != nil {
		t.Fatal(err)
	}
	want := "b:2:50 c:3:100"
	if fmt.Sprint(r.gated) != "["+want+"]" || fmt.Sprint(r.heard) != "["+want+"]" || names(f.Instances()) != want {
		t.Errorf("gated %v heard %v current %s, want %s", r.gated, r.heard, names(f.Instances()), want)
	}
}

// TestRefusedListChangesNothing: a list that does not validate, or that the
// gate refuses, reaches no subscriber and leaves the source's previous list
// in force, for the merge of later publishes too.
func TestRefusedListChangesNothing(t *testing.T) {
	var r recorder
	f := New(r.options(nil))
	file := f.Source("file", []config.Instance{inst("a", 1, 100)})
	dns := f.Source("dns", nil)

	err := dns([]config.Instance{inst("x", 9, 100), inst("x", 8, 100)})
	var ie *config.InstanceError
	if !errors.As(err, &ie) || ie.Key != "instances[2].name" || !strings.Contains(err.Error(), `instances from dns: instance "x"`) {
		t.Errorf("duplicate within a source: %v", err)
	}
	if len(r.gated) != 0 {
		t.Errorf("the gate was offered a list that does not validate: %v", r.gated)
	}

	r.refuse = errors.New("no")
	if err := file([]config.Instance{inst("b", 2, 100)}); err == nil || !strings.Contains(err.Error(), "instances from file: no") {
		t.Errorf("refused by the gate: %v", err)
	}
	if len(r.heard) != 0 || names(f.Instances()) != "a:1:100" {
		t.Errorf("after refusals: heard %v, current %s", r.heard, names(f.Instances()))
	}

	r.refuse = nil
	if err := dns([]config.Instance{inst("c", 3, 100)}); err != nil {
		t.Fatal(err)
	}
	if got := r.heard[len(r.heard)-1]; got != "a:1:100 c:3:100" {
		t.Errorf("after dns's list: %s, want the file's a (its refused list left out) and dns's c", got)
	}
}

// TestConflictFileWins: a name two sources give differently is the
// higher-ranked source's, logged once while the conflict lasts; alike, it is
// one instance and no conflict.
func TestConflictFileWins(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	var r recorder
	f := New(r.options(zap.New(core)))
	file := f.Source("file", []config.Instance{inst("a", 1, 100), inst("b", 2, 100)})
	dns := f.Source("dns", nil)
	publish := func(p Publish, in ...config.Instance) {
		t.Helper()
		if err := p(in); err != nil {
			t.Fatal(err)
		}
	}

	publish(dns, inst("b", 7, 100), inst("a", 1, 100), inst("c", 3, 100))
	publish(dns, inst("b", 7, 100), inst("a", 1, 100), inst("c", 3, 100)) // again: logged once
	if got := r.heard[len(r.heard)-1]; got != "a:1:100 b:2:100 c:3:100" {
		t.Errorf("merged %s, want the file's a and b, and dns's c", got)
	}
	entries := logs.TakeAll()
	if len(entries) != 1 || entries[0].ContextMap()["instance"] != "b" || entries[0].ContextMap()["kept"] != "file" ||
		entries[0].ContextMap()["ignored_http"] != "http://127.0.0.1:7" {
		t.Fatalf("logs %v, want one conflict about b", entries)
	}

	publish(dns, inst("c", 3, 100)) // the conflict ends ...
	publish(file, inst("a", 1, 100), inst("b", 2, 100))
	publish(dns, inst("b", 7, 100), inst("c", 3, 100)) // ... and comes back: logged again
	if n := logs.Len(); n != 1 {
		t.Errorf("%d logs after the conflict came back, want 1", n)
	}
}

// staticSource publishes the lists it is given, one per value on lists, and
// stops with ctx.
type staticSource struct {
	lists chan []config.Instance
	errs  chan error
}

var _ Source = (*staticSource)(nil)

func (s *staticSource) Run(ctx context.Context, publish Publish) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case in := <-s.lists:
			s.errs <- publish(in)
		}
	}
}

// TestRunSource: a run-time source publishes through Run, ranked below the
// sources added before it, until ctx ends.
func TestRunSource(t *testing.T) {
	var r recorder
	f := New(r.options(nil))
	f.Source("file", []config.Instance{inst("a", 1, 100)})
	src := &staticSource{lists: make(chan []config.Instance), errs: make(chan error)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, "dns", src) }()
	src.lists <- []config.Instance{inst("a", 5, 100), inst("d", 4, 100)}
	if err := <-src.errs; err != nil {
		t.Fatal(err)
	}
	if got := names(f.Instances()); got != "a:1:100 d:4:100" {
		t.Errorf("merged %s", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}
