package balancer

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"clb/config"
	"clb/hashing"
	"clb/loadfactor"
)

// Change is a change of the instance list that a what-if asks about: the
// instances removed, then those added. Removing and adding one name changes
// its weight.
type Change struct {
	Remove []string
	Add    []hashing.Instance
	// Cluster is the cluster the change is in, when there are several
	// (SPEC section 13): added instances join it. Default the cluster of
	// the removed instances.
	Cluster string
}

// Effect is what a change would do to routing, compared key by key with
// routing now. Shares are of all keys.
type Effect struct {
	// Keys is how many keys were compared: one per hashing slot, so that
	// while no instance ramps the shares are exact, not sampled.
	Keys int
	// Moved is the share of keys whose owner would change.
	Moved float64
	// Flows are the moved keys by old and new owner (a sparse matrix), the
	// largest first; "" stands for no owner.
	Flows []Flow
	// ToReplica is the share of keys that would move to their replica
	// partner: every moved key, for a removal (SPEC section 1).
	ToReplica float64
	// ToNewPartner is the share of keys that would move to an instance
	// whose replica partner for them is their old owner: every moved key,
	// for an addition.
	ToNewPartner float64
	// Unsafe is the share of moved keys that are neither: their new owner
	// would find their state on neither itself nor its replica partner.
	// Only several changes at once can give any.
	Unsafe float64
	// ReplicaChanged is the share of keys that would stay where they are
	// but get another replica partner (their state is copied to it).
	ReplicaChanged float64
	// Shares are each instance's share of keys now and after the change, in
	// name order.
	Shares []ShareChange
}

// Flow is one cell of the move matrix.
type Flow struct {
	From, To string
	Share    float64
}

// ShareChange is one instance's share of keys before and after a change.
type ShareChange struct {
	Name          string
	Before, After float64
}

// ErrBadChange is returned for a change that cannot be applied: a name
// added twice or already configured, a negative weight.
var ErrBadChange = errors.New("bad change")

// WhatIf computes what c would do if applied now: instances keep their
// states (a ramping one at its load factor of now), an added instance is
// taken as up and fully ramped (where its ramp leads), a removed one is gone.
// Nothing changes. A change that only removes costs two routes per slot
// (about 0.05 s at any N); one that adds builds a hashing table too
// (O(2^20·N): 0.3 s at N = 3, 1.4 s at N = 100, 3.6 s at N = 1000 measured
// on a busy 2-core machine; BenchmarkWhatIf).
//
// With several clusters, a change is within one: its effect is on that
// cluster's keys, and its shares are of them.
func (t *Table) WhatIf(c Change, now time.Time) (Effect, error) {
	if len(t.clusters) > 1 || c.Cluster != "" {
		ci, err := t.changeCluster(c)
		if err != nil {
			return Effect{}, err
		}
		for _, in := range c.Add {
			if k, ok := t.byName[in.Name]; ok && t.members[k].cluster != ci {
				return Effect{}, fmt.Errorf("%w: %s is configured already, in cluster %s", ErrBadChange, in.Name, t.clusters[t.members[k].cluster].name)
			}
		}
		return t.part(ci).whatIf(c, now)
	}
	return t.whatIf(c, now)
}

// changeCluster is the index of the cluster c is in.
func (t *Table) changeCluster(c Change) (int, error) {
	ci := -1
	if c.Cluster != "" {
		if ci = t.clusterIndex(c.Cluster); ci >= len(t.clusters) || t.clusters[ci].name != c.Cluster {
			return -1, fmt.Errorf("%w %q", ErrUnknownCluster, c.Cluster)
		}
	}
	for _, name := range c.Remove {
		k, ok := t.byName[name]
		if !ok {
			return -1, fmt.Errorf("%w %q", ErrUnknownInstance, name)
		}
		if ci >= 0 && t.members[k].cluster != ci {
			return -1, fmt.Errorf("%w: %s is not in cluster %s: a change is within one cluster", ErrBadChange, name, t.clusters[ci].name)
		}
		ci = t.members[k].cluster
	}
	if ci < 0 {
		return -1, fmt.Errorf("%w: name the cluster the instances are added to", ErrBadChange)
	}
	return ci, nil
}

// part is cluster ci alone, as a Table of one cluster.
func (t *Table) part(ci int) *Table {
	u := &Table{routing: *t.clusters[ci], keyHash: t.keyHash, byName: map[string]int{}, version: t.version, simple: true}
	u.clusters = []*routing{&u.routing}
	for _, m := range t.members {
		if m.cluster == ci {
			m.cluster = 0
			u.byName[m.instance.Name] = len(u.members)
			u.members = append(u.members, m)
		}
	}
	return u
}

func (t *Table) whatIf(c Change, now time.Time) (Effect, error) {
	if t.hash == nil {
		return Effect{}, fmt.Errorf("%w: cluster %s has no instance of weight > 0", ErrBadChange, t.name)
	}
	after, err := t.changed(c)
	if err != nil {
		return Effect{}, err
	}
	toAfter := make([]int, t.hash.Len())
	for i := range toAfter {
		if toAfter[i] = i; after.hash != t.hash {
			if j, ok := after.hash.Index(t.hash.Name(i)); ok {
				toAfter[i] = j
			} else {
				toAfter[i] = -1
			}
		}
	}
	// same reports whether instance i of the current table (-1: none) is
	// instance j of the changed one.
	same := func(i, j int) bool {
		if i < 0 {
			return j < 0
		}
		return toAfter[i] >= 0 && toAfter[i] == j
	}
	e := newCounter(t, after)
	t.eachSlotKey(func(h uint64) {
		o0, r0 := t.pick(h, &now, -1)
		o1, r1 := after.pick(h, &now, -1)
		e.keys++
		e.count(e.before, o0)
		e.count(e.after, o1)
		if same(o0, o1) {
			if !same(r0, r1) {
				e.replicaChanged++
			}
			return
		}
		e.move(o0, o1, o1 >= 0 && same(r0, o1), o0 >= 0 && same(o0, r1))
	})
	return e.effect(true), nil
}

// Drains is, for every configured instance in configuration order, what
// removing it alone would do now: the what-if of draining it to its end
// (without Shares, which are the shares now and the Flows). It takes one
// pass over the slots for all instances, as removing an instance changes
// only the keys it owns (SPEC section 2), so every instance's effect is
// WhatIf's for its removal, at the cost of one.
func (t *Table) Drains(now time.Time) []NamedEffect {
	if len(t.clusters) == 1 {
		return t.drains(now)
	}
	// Removing an instance moves keys within its cluster only: each
	// cluster's drains are its own.
	byName := map[string]Effect{}
	for ci := range t.clusters {
		for _, e := range t.part(ci).drains(now) {
			byName[e.Name] = e.Effect
		}
	}
	out := make([]NamedEffect, len(t.members))
	for k, m := range t.members {
		out[k] = NamedEffect{Name: m.instance.Name, Effect: byName[m.instance.Name]}
	}
	return out
}

func (t *Table) drains(now time.Time) []NamedEffect {
	out := make([]NamedEffect, len(t.members))
	if t.hash == nil {
		for k, m := range t.members {
			out[k].Name = m.instance.Name
		}
		return out
	}
	per := make([]*effectCounter, t.hash.Len())
	for i := range per {
		per[i] = &effectCounter{was: t, will: t, flows: map[[2]int]int{}}
	}
	keys := 0
	t.eachSlotKey(func(h uint64) {
		keys++
		owner, replica := t.pick(h, &now, -1)
		if owner < 0 {
			return
		}
		if replica >= 0 {
			// Removing its replica partner leaves a key where it is, with
			// another partner.
			per[replica].replicaChanged++
		}
		o1, _ := t.pick(h, &now, owner)
		per[owner].move(owner, o1, o1 >= 0 && o1 == replica, false)
	})
	for k, m := range t.members {
		out[k].Name = m.instance.Name
		if m.index < 0 {
			out[k].Effect = Effect{Keys: keys}
			continue
		}
		c := per[m.index]
		c.keys = keys
		out[k].Effect = c.effect(false)
	}
	return out
}

// NamedEffect is the effect of removing one instance.
type NamedEffect struct {
	Name string
	Effect
}

// eachSlotKey calls f with one key hash in every slot of the hashing table:
// the slot's top bits and pseudo-random low bits, which give the key its
// u(key) for the load factors.
func (t *Table) eachSlotKey(f func(h uint64)) {
	slots := uint64(t.hash.Slots())
	shift := 64 - uint(bits.Len64(slots-1))
	for s := range slots {
		f(s<<shift | hashing.Mix(s)>>(64-shift))
	}
}

// changed is the Table that c would give: the same instance states, another
// instance list.
func (t *Table) changed(c Change) (*Table, error) {
	removed := map[string]bool{}
	for _, name := range c.Remove {
		if _, ok := t.byName[name]; !ok {
			return nil, fmt.Errorf("%w %q", ErrUnknownInstance, name)
		}
		removed[name] = true
	}
	added := map[string]bool{}
	for _, in := range c.Add {
		_, configured := t.byName[in.Name]
		switch {
		case in.Weight < 0:
			return nil, fmt.Errorf("%w: %s: weight %d is negative", ErrBadChange, in.Name, in.Weight)
		case added[in.Name]:
			return nil, fmt.Errorf("%w: %s is added twice", ErrBadChange, in.Name)
		case configured && !removed[in.Name]:
			return nil, fmt.Errorf("%w: %s is configured already (remove it and add it to change its weight)", ErrBadChange, in.Name)
		}
		added[in.Name] = true
	}
	if len(c.Add) == 0 {
		// Removing an instance deletes it from every preference list and
		// leaves the others in their order: routing as if it were not live
		// is routing without it, with no table to build.
		u := &Table{routing: routing{name: t.name, weight: t.weight, hash: t.hash, instances: t.instances, ramps: t.ramps},
			members: t.members, byName: t.byName, version: t.version}
		for p := range u.kinds {
			u.kinds[p] = slices.Clone(t.kinds[p])
			for name := range removed {
				if i := t.members[t.byName[name]].index; i >= 0 {
					u.kinds[p][i] = out
				}
			}
		}
		return u, nil
	}
	var list []hashing.Instance
	for _, m := range t.members {
		if !removed[m.instance.Name] {
			list = append(list, hashing.Instance{Name: m.instance.Name, Weight: m.instance.Weight})
		}
	}
	list = append(list, c.Add...)
	hash, err := hashing.New(list)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadChange, err)
	}
	n := hash.Len()
	u := &Table{routing: routing{name: t.name, weight: t.weight, hash: hash, instances: make([]*config.Instance, n), ramps: make([]loadfactor.Ramp, n)},
		version: t.version}
	for p := range u.kinds {
		u.kinds[p] = make([]kind, n)
	}
	for i := range n {
		name := hash.Name(i)
		if k, ok := t.byName[name]; ok && !added[name] {
			m := t.members[k]
			u.instances[i], u.ramps[i] = m.instance, t.ramps[m.index]
			for p := range u.kinds {
				u.kinds[p][i] = t.kinds[p][m.index]
			}
			continue
		}
		// Added: up and fully ramped, with no address, so it counts for
		// AnyProtocol only.
		u.instances[i] = &config.Instance{Name: name, Weight: hash.Weight(i)}
		u.ramps[i] = loadfactor.Full()
		u.kinds[AnyProtocol][i] = full
	}
	return u, nil
}

// pick is decideSkip's owner and replica partner (-1 for none) by hashing
// index, for AnyProtocol: what a what-if compares, key after key.
func (t *Table) pick(h uint64, now *time.Time, skip int) (owner, replica int) {
	var r router
	r.c, r.kinds, r.skip, r.h, r.now, r.u = &t.routing, t.kinds[AnyProtocol], skip, h, now, -1
	if owner, replica = r.routeKept(); replica < 0 {
		owner, replica, _ = r.route()
	}
	return owner, replica
}

// effectCounter counts an Effect key by key, by hashing index: before in
// the current table's, after in the changed one's.
type effectCounter struct {
	was, will                                                    *Table
	keys, moved, toReplica, toNewPartner, unsafe, replicaChanged int
	flows                                                        map[[2]int]int
	before, after                                                []int
}

func newCounter(was, will *Table) *effectCounter {
	return &effectCounter{was: was, will: will, flows: map[[2]int]int{},
		before: make([]int, was.hash.Len()), after: make([]int, will.hash.Len())}
}

func (e *effectCounter) count(c []int, i int) {
	if i >= 0 {
		c[i]++
	}
}

// move counts a key whose owner changes from (-1: none) to to (-1: none):
// to its old replica partner, or to an instance whose replica partner is
// its old owner.
func (e *effectCounter) move(from, to int, toReplica, toNewPartner bool) {
	e.moved++
	e.flows[[2]int{from, to}]++
	switch {
	case toReplica:
		e.toReplica++
	case toNewPartner:
		e.toNewPartner++
	case from >= 0:
		e.unsafe++ // a key that had no owner has no state to lose
	}
}

// effect is the Effect counted; Shares only with shares (a drain's are the
// shares now and its Flows).
func (e *effectCounter) effect(shares bool) Effect {
	if e.keys == 0 {
		return Effect{}
	}
	n := float64(e.keys)
	out := Effect{
		Keys: e.keys, Moved: float64(e.moved) / n, ToReplica: float64(e.toReplica) / n,
		ToNewPartner: float64(e.toNewPartner) / n, Unsafe: float64(e.unsafe) / n,
		ReplicaChanged: float64(e.replicaChanged) / n,
	}
	name := func(t *Table, i int) string {
		if i < 0 {
			return ""
		}
		return t.hash.Name(i)
	}
	for ft, c := range e.flows {
		out.Flows = append(out.Flows, Flow{From: name(e.was, ft[0]), To: name(e.will, ft[1]), Share: float64(c) / n})
	}
	slices.SortFunc(out.Flows, func(a, b Flow) int {
		return cmp.Or(cmp.Compare(b.Share, a.Share), cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
	if !shares {
		return out
	}
	byName := map[string]*ShareChange{}
	share := func(name string) *ShareChange {
		if byName[name] == nil {
			byName[name] = &ShareChange{Name: name}
		}
		return byName[name]
	}
	for i, c := range e.before {
		if c != 0 {
			share(name(e.was, i)).Before = float64(c) / n
		}
	}
	for i, c := range e.after {
		if c != 0 {
			share(name(e.will, i)).After = float64(c) / n
		}
	}
	for _, s := range byName {
		out.Shares = append(out.Shares, *s)
	}
	slices.SortFunc(out.Shares, func(a, b ShareChange) int { return cmp.Compare(a.Name, b.Name) })
	return out
}
