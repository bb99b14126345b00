package balancer

import (
	"errors"
	"testing"
	"time"

	"clb/loadfactor"
)

// TestBatch: changes made in one Batch publish one Table, which routes as
// the same changes made one by one do; an unknown instance's error comes
// back without stopping the others, and a batch that changes nothing
// publishes nothing.
func TestBatch(t *testing.T) {
	params := loadfactor.Params{Start: 0.25, Increase: 0.25, Period: time.Second}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	one, err := New(instances(5), params)
	if err != nil {
		t.Fatal(err)
	}
	batched, err := New(instances(5), params)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, 5)
	for _, st := range one.Table().Status(now) {
		names = append(names, st.Instance.Name)
	}
	apply := func(w Writer) []error {
		return []error{
			w.Drain(names[0], now),
			w.Disable(names[1], now),
			w.DrainFrom(names[2], 0.5, now.Add(-time.Second), now),
			w.Disable(names[3], now),
			w.Enable(names[3], now),
			w.EnableFrom(names[4], 0.75, now, now),
			w.Drain("nobody", now),
		}
	}
	wantErrs := apply(one)
	before := batched.Table().Version()
	var gotErrs []error
	batched.Batch(func(w Writer) { gotErrs = apply(w) })
	if v := batched.Table().Version(); v != before+1 {
		t.Errorf("table version %d after a batch from %d, want one table published", v, before)
	}
	for i := range wantErrs {
		if (wantErrs[i] == nil) != (gotErrs[i] == nil) {
			t.Errorf("change %d: error %v in a batch, %v alone", i, gotErrs[i], wantErrs[i])
		}
	}
	if !errors.Is(gotErrs[len(gotErrs)-1], ErrUnknownInstance) {
		t.Errorf("unknown instance in a batch: %v, want ErrUnknownInstance", gotErrs[len(gotErrs)-1])
	}
	for _, at := range []time.Duration{0, 500 * time.Millisecond, 2 * time.Second} {
		if a, b := one.Table().Fingerprint(now.Add(at)), batched.Table().Fingerprint(now.Add(at)); a != b {
			t.Errorf("at now+%v: fingerprint %016x one by one, %016x batched", at, a, b)
		}
		for i, st := range one.Table().Status(now.Add(at)) {
			if got := batched.Table().Status(now.Add(at))[i]; got.State != st.State || got.Factor != st.Factor {
				t.Errorf("at now+%v: %s %v %v batched, %v %v one by one", at, st.Instance.Name, got.State, got.Factor, st.State, st.Factor)
			}
		}
	}

	before = batched.Table().Version()
	batched.Batch(func(w Writer) {
		if err := w.Disable(names[1], now); err != nil {
			t.Error(err)
		}
	})
	if v := batched.Table().Version(); v != before {
		t.Errorf("a batch that changed nothing published version %d after %d", v, before)
	}
}
