package balancer

import "time"

// Writer makes admin changes inside Batch: each is the Balancer method of
// the same name, but none publishes a Table of its own.
type Writer interface {
	Enable(name string, now time.Time) error
	Disable(name string, now time.Time) error
	Drain(name string, now time.Time) error
	EnableFrom(name string, from float64, at, now time.Time) error
	DrainFrom(name string, from float64, at, now time.Time) error
}

// Batch runs f holding the writers' lock and then publishes one Table for
// every change f made through w, rather than one each: a watch response
// from etcd can carry hundreds of admin actions, and each Table costs a
// walk of every instance. f must not call the Balancer's own methods.
func (b *Balancer) Batch(f func(w Writer)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := &batch{b: b}
	f(w)
	if w.changed {
		b.publish()
	}
}

// batch is Batch's Writer.
type batch struct {
	b       *Balancer
	changed bool
}

func (w *batch) apply(name string, f func(*member) bool) error {
	changed, err := w.b.changeLocked(name, f)
	w.changed = w.changed || changed
	return err
}

func (w *batch) Enable(name string, now time.Time) error {
	return w.apply(name, w.b.enable(now))
}

func (w *batch) Disable(name string, _ time.Time) error { return w.apply(name, disable) }

func (w *batch) Drain(name string, now time.Time) error { return w.apply(name, w.b.drain(now)) }

func (w *batch) EnableFrom(name string, from float64, at, now time.Time) error {
	return w.apply(name, w.b.enableFrom(from, at, now))
}

func (w *batch) DrainFrom(name string, from float64, at, now time.Time) error {
	return w.apply(name, w.b.drainFrom(from, at, now))
}
