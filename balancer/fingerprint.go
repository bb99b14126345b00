package balancer

import (
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Fingerprint is a hash of everything routing depends on at now (SPEC
// section 11): each cluster's name and weight (the choice of a new
// session's cluster), each instance's name, cluster and weight (the
// preference lists), the protocols it takes, and, for a live one, whether
// it is admitting and at which load factor (exactly the ramp's step). Two Tables with equal
// fingerprints route every key alike; it does not depend on the order of
// the instances, on their addresses, on the version or on when a Table was
// published, so two clb nodes can compare theirs.
func (t *Table) Fingerprint(now time.Time) uint64 {
	order := make([]int, len(t.members))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return strings.Compare(t.members[a].instance.Name, t.members[b].instance.Name)
	})
	d := xxhash.New()
	var b [8]byte
	clusters := slices.Clone(t.clusters)
	slices.SortFunc(clusters, func(a, b *routing) int { return strings.Compare(a.name, b.name) })
	for _, c := range clusters {
		_, _ = d.WriteString(c.name)
		_, _ = d.Write([]byte{0})
		binary.LittleEndian.PutUint64(b[:], uint64(c.weight))
		_, _ = d.Write(b[:])
	}
	for _, k := range order {
		m := t.members[k]
		_, _ = d.WriteString(m.instance.Name)
		_, _ = d.Write([]byte{0})
		_, _ = d.WriteString(t.clusters[m.cluster].name)
		_, _ = d.Write([]byte{0})
		binary.LittleEndian.PutUint64(b[:], uint64(m.instance.Weight))
		_, _ = d.Write(b[:])
		var kinds [protocols]byte
		if m.index >= 0 {
			for p := range kinds {
				kinds[p] = byte(t.clusters[m.cluster].kinds[p][m.index])
			}
		}
		_, _ = d.Write(kinds[:])
		factor := 0.0
		if m.state.Live() {
			factor = m.ramp.Factor(now)
		}
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(factor))
		_, _ = d.Write(b[:])
	}
	return d.Sum64()
}
