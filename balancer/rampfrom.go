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
