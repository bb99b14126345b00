package balancer

import (
	"time"

	"clb/loadfactor"
)

// RampFrom ramps an enabled, healthy instance up as if it had come back at
// from rather than when this node learnt of it: from is a moment every clb
// node knows alike (the start time an instance registered with, SPEC
// section 11), so nodes that learn of it at different moments give it the
// same load factor. A ramp already over at now leaves the instance Up. A
// disabled, draining or down instance is left as it is: its ramp is the
// operator's or its health's.
func (b *Balancer) RampFrom(name string, from, now time.Time) error {
	return b.change(name, func(m *member) bool {
		if !m.healthy || m.admin != enabled {
			return false
		}
		ramp := loadfactor.Up(b.params, 0, from)
		if ramp.Done(now) {
			ramp = loadfactor.Full()
		}
		if ramp == m.ramp {
			return false
		}
		m.ramp = ramp
		return true
	})
}

// JoinRamp is RampFrom for an instance this node has at f = 1 for good (as
// found healthy at its start): a node started while the other nodes ramp
// the instance up from from joins their ramp (SPEC section 11). An
// instance on a ramp of its own here (an admin action's, a registration's,
// a return's) keeps it, and a ramp from from that is over changes nothing.
func (b *Balancer) JoinRamp(name string, from, now time.Time) error {
	return b.change(name, func(m *member) bool {
		if !m.healthy || m.admin != enabled || m.ramp != loadfactor.Full() {
			return false
		}
		ramp := loadfactor.Up(b.params, 0, from)
		if ramp.Done(now) {
			return false
		}
		m.ramp = ramp
		return true
	})
}

// EnableFrom applies an enable decided on another clb node (SPEC section
// 11: an etcd admin action): the instance is enabled and, if healthy,
// ramps up from the load factor from at at, as Enable made it on the node
// that decided it, whatever its state here was (a node that missed the
// drain before it ends up with the same ramp). A ramp over at now leaves it
// Up.
func (b *Balancer) EnableFrom(name string, from float64, at, now time.Time) error {
	return b.change(name, b.enableFrom(from, at, now))
}

func (b *Balancer) enableFrom(from float64, at, now time.Time) func(*member) bool {
	return func(m *member) bool {
		ramp := loadfactor.Up(b.params, from, at)
		if ramp.Done(now) {
			ramp = loadfactor.Full()
		}
		if m.admin == enabled && (m.ramp == ramp || !m.healthy) {
			return false
		}
		m.admin = enabled
		if m.healthy {
			m.ramp = ramp
		}
		return true
	}
}

// DrainFrom applies a drain decided on another clb node: the instance's
// load factor runs down from from at at, as Drain made it there, whatever
// its state here was; a drain over at now leaves it Disabled.
func (b *Balancer) DrainFrom(name string, from float64, at, now time.Time) error {
	return b.change(name, b.drainFrom(from, at, now))
}

func (b *Balancer) drainFrom(from float64, at, now time.Time) func(*member) bool {
	return func(m *member) bool {
		admin, ramp := draining, loadfactor.Down(b.params, from, at)
		if ramp.Done(now) {
			admin, ramp = disabled, loadfactor.Full()
		}
		if m.admin == admin && m.ramp == ramp {
			return false
		}
		m.admin, m.ramp = admin, ramp
		return true
	}
}
