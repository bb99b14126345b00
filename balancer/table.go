package balancer

import (
	"slices"
	"sync/atomic"
	"time"

	"clb/config"
	"clb/hashing"
	"clb/loadfactor"
)

// Decision is where one request goes.
type Decision struct {
	// Owner receives the request; nil when no instance is live.
	Owner *config.Instance
	// Replica is the key's replica partner: the instance that would own the
	// key if Owner failed; nil when no other instance is live.
	Replica *config.Instance
	// Previous is the configured instance that the request says served it
	// last, when that is not Owner; nil otherwise.
	Previous *config.Instance
	// Repaired is set when the request named an instance that served it last
	// and that instance is not Owner (even one no longer configured): the
	// front end re-issues its sticky route.
	Repaired bool
	// Fallback is set when no live instance admitted the key (all are
	// ramping) and the first live one took it.
	Fallback bool
}

// kind is how an instance takes keys in one Table.
type kind uint8

const (
	out     kind = iota // not live
	full                // live, admits every key
	rising              // live, admits u(key) < f(now)
	falling             // live while f(now) > 0, admits u(key) < f(now)
)

// Table is one immutable routing state: per cluster, the hashing table of
// its instances and each one's state. A new Table replaces it on every
// change.
type Table struct {
	// routing is the first cluster's (by name), the only one without a
	// clusters: section.
	routing
	// clusters are every cluster, by name; clusters[0] is &routing.
	clusters []*routing
	// choice picks a new session's cluster over the clusters' weights.
	choice hashing.Choice
	// simple: one cluster, open to new sessions; a route needs no choice.
	simple bool
	// keyHash hashes keys (every cluster's table hashes alike); nil when
	// no instance has weight > 0.
	keyHash *hashing.Table
	// Every configured instance, weight 0 included, in configuration order.
	members []memberView
	byName  map[string]int // name → index in members
	version uint64
	// routed caches RoutedShares for the load factors it was sampled at:
	// derived from the immutable fields, filled on first use.
	routed atomic.Pointer[routedShares]
}

// routing is one cluster's part of a Table.
type routing struct {
	name string
	// weight is the cluster's share of new sessions; 0: closed to them.
	weight int
	// hash is nil when no instance of the cluster has weight > 0.
	hash *hashing.Table
	// By hashing index (instances of weight > 0):
	instances []*config.Instance
	kinds     [protocols][]kind // an instance without the protocol's address is out
	ramps     []loadfactor.Ramp
}

// memberView is one instance's state as a Table fixed it.
type memberView struct {
	instance *config.Instance
	state    State
	ramp     loadfactor.Ramp
	cluster  int // index in Table.clusters
	index    int // hashing index in its cluster's, -1 for weight 0
}

// Protocol narrows routing to the instances that speak it.
type Protocol uint8

const (
	// AnyProtocol considers every instance (clb route).
	AnyProtocol Protocol = iota
	// SIP considers the instances with a SIP address.
	SIP
	// HTTP considers the instances with an HTTP address.
	HTTP

	protocols = 3
)

// Route decides where a request with key goes among all instances. last is
// the instance the request says served it last ("" if none).
func (t *Table) Route(key, last string, now time.Time) Decision {
	return t.decide(AnyProtocol, t.Hash(key), last, &now)
}

// RouteFor is Route among the instances that speak p. Dropping the others
// keeps the order of the rest, so a key of a converged session has the same
// owner for SIP and HTTP while the owner speaks both.
func (t *Table) RouteFor(p Protocol, key, last string, now time.Time) Decision {
	return t.decide(p, t.Hash(key), last, &now)
}

// Hash is key's hash, for RouteHash.
func (t *Table) Hash(key string) uint64 {
	if t.keyHash == nil {
		return 0
	}
	return t.keyHash.Hash(key)
}

// RouteWithout is RouteFor as if instance failed were not live, with failed
// as the instance the request last went to: the decision for a retry after
// failed could not be reached (its Previous is failed), within failed's
// cluster.
func (t *Table) RouteWithout(p Protocol, key, failed string, now time.Time) Decision {
	c, skip := &t.routing, -1
	if m, ok := t.byName[failed]; ok {
		c, skip = t.clusters[t.members[m].cluster], t.members[m].index
	}
	return t.decideIn(c, p, t.Hash(key), failed, &now, skip)
}

// RouteHash is Route for a key already hashed with Hash.
func (t *Table) RouteHash(h uint64, last string, now time.Time) Decision {
	return t.decide(AnyProtocol, h, last, &now)
}

// decide is one call, so that it inlines into Route: the cluster is chosen
// in decideIn (one open cluster, the common case, costs a test).
func (t *Table) decide(p Protocol, h uint64, last string, now *time.Time) Decision {
	return t.decideIn(nil, p, h, last, now, -1)
}

// decideClusters is decide with a cluster to choose (SPEC section 13). A
// session that names an instance of a cluster stays in it, whatever the
// weights: its owner and replica partner are its cluster's, and with no
// live instance left there it gets none (the front ends answer 503 with
// Retry-After) while the cluster is open, as failover never crosses a
// cluster. Once the cluster is closed (weight 0) and has no live instance,
// the operator has retired it: what still names it starts anew. A new
// session tries the open clusters in its key's order of the weighted
// choice, so one whose first cluster has no live instance for it starts in
// the next (it has no state to lose).
func (t *Table) decideClusters(p Protocol, h uint64, last string, now *time.Time) Decision {
	if last != "" {
		if m, ok := t.byName[last]; ok {
			c := t.clusters[t.members[m].cluster]
			if d := t.decideIn(c, p, h, last, now, -1); d.Owner != nil || c.weight > 0 {
				return d
			}
		}
	}
	var tried uint64
	for {
		ci := t.choice.First(h, tried)
		if ci < 0 {
			return t.noOwner(last)
		}
		if d := t.decideIn(t.clusters[ci], p, h, last, now, -1); d.Owner != nil {
			return d
		}
		tried |= 1 << uint(ci)
	}
}

// noOwner is the decision when no instance can take the key.
func (t *Table) noOwner(last string) Decision {
	var d Decision
	if last != "" {
		d.Repaired = true
		if m, ok := t.byName[last]; ok {
			d.Previous = t.members[m].instance
		}
	}
	return d
}

// decideIn decides within cluster c (nil: the cluster decideClusters
// chooses); skip is a hashing index of c taken as not live, or -1.
func (t *Table) decideIn(c *routing, p Protocol, h uint64, last string, now *time.Time, skip int) Decision {
	if c == nil {
		if !t.simple {
			return t.decideClusters(p, h, last, now)
		}
		c = &t.routing
	}
	if c.hash == nil {
		return Decision{}
	}
	// Field by field, not a literal: a literal of this size is built in one
	// stack slot and copied to another with wide loads of narrow stores,
	// which cannot be store-forwarded (+12 ns a route, measured).
	var r router
	r.c, r.kinds, r.skip, r.h, r.now, r.u = c, c.kinds[p], skip, h, now, -1
	owner, replica := r.routeKept()
	fallback := false
	if replica < 0 {
		owner, replica, fallback = r.route()
	}
	var d Decision
	if owner < 0 {
		return d
	}
	d.Owner, d.Fallback = c.instances[owner], fallback
	if replica >= 0 {
		d.Replica = c.instances[replica]
	}
	if last != "" && last != d.Owner.Name {
		d.Repaired = true
		if m, ok := t.byName[last]; ok {
			d.Previous = t.members[m].instance
		}
	}
	return d
}

// router decides for one key; it lives on the stack of RouteHash.
type router struct {
	c     *routing
	kinds []kind
	skip  int // an instance taken as not live, or -1
	h     uint64
	now   *time.Time
	u     float64 // u(key), computed the first time a ramping instance asks
}

// routeKept is the common case, walked without function values: the owner
// and the replica partner are two admitting instances among the kept
// choices. It returns replica -1 when route must decide. (Counted with
// callgrind: the function values of the general walk cost more than all the
// rest of Route.)
func (r *router) routeKept() (owner, replica int) {
	kept, owner := r.c.hash.Kept(r.h), -1
	for j := range hashing.Depth {
		i := kept.At(j)
		if i < 0 {
			return -1, -1
		}
		if i == r.skip {
			continue
		}
		switch k := r.kinds[i]; {
		case k == out, k != full && !r.admits(i):
			continue
		case owner >= 0:
			return owner, i
		}
		owner = i
	}
	return -1, -1
}

func (r *router) admits(i int) bool {
	if i == r.skip {
		return false
	}
	switch r.kinds[i] {
	case full:
		return true
	case rising, falling:
		if r.u < 0 {
			r.u = loadfactor.Unit(r.h)
		}
		return loadfactor.Admits(r.u, r.c.ramps[i].Factor(*r.now))
	}
	return false
}

func (r *router) live(i int) bool {
	if i == r.skip {
		return false
	}
	switch r.kinds[i] {
	case full, rising:
		return true
	case falling:
		return r.c.ramps[i].Factor(*r.now) > 0
	}
	return false
}

// route finds the owner and the replica partner (-1 for none): SPEC
// section 1 as it stands.
func (r *router) route() (owner, replica int, fallback bool) {
	t := r.c.hash
	if owner = t.First(r.h, r.admits); owner >= 0 {
		if replica = t.Next(r.h, owner, r.admits); replica < 0 {
			// Nothing after the owner admits the key: were the owner to
			// fail, no live instance would, and the first live one would
			// take it.
			replica = t.First(r.h, func(i int) bool { return i != owner && r.live(i) })
		}
		return owner, replica, false
	}
	if owner = t.First(r.h, r.live); owner < 0 {
		return -1, -1, false
	}
	return owner, t.Next(r.h, owner, r.live), true
}

// PreferenceList appends to dst the names of the first n instances of key's
// preference list (all if n < 0), whatever their state, in the cluster a new
// session of key starts in.
func (t *Table) PreferenceList(dst []string, key string, n int) []string {
	h := t.Hash(key)
	c := t.newCluster(h)
	if c == nil {
		return dst
	}
	for _, i := range c.hash.AppendList(nil, h, n) {
		dst = append(dst, c.hash.Name(i))
	}
	return dst
}

// newCluster is the cluster a new session of key hash h starts in when
// every instance is live: the first open one with an instance of weight > 0
// in the key's order; nil for none.
func (t *Table) newCluster(h uint64) *routing {
	if t.simple {
		return &t.routing
	}
	var tried uint64
	for {
		ci := t.choice.First(h, tried)
		if ci < 0 {
			return nil
		}
		if t.clusters[ci].hash != nil {
			return t.clusters[ci]
		}
		tried |= 1 << uint(ci)
	}
}

// InstanceStatus is one instance's state at a moment.
type InstanceStatus struct {
	Instance *config.Instance
	State    State
	// Factor is the load factor; 0 for an instance that is not live.
	Factor float64
	// Share is the fraction of new keys it owns when every instance is live
	// and fully ramped: its share of its cluster's, times its cluster's.
	Share float64
	// NextChange is when Factor next steps; zero when it is not ramping.
	NextChange time.Time
}

// Status is every configured instance's state at now, in configuration order.
func (t *Table) Status(now time.Time) []InstanceStatus {
	shares := t.clusterShares()
	out := make([]InstanceStatus, len(t.members))
	for k, m := range t.members {
		s := InstanceStatus{Instance: m.instance, State: m.state}
		if m.state.Live() {
			s.Factor = m.ramp.Factor(now)
			s.NextChange, _ = m.ramp.NextChange(now)
		}
		if m.index >= 0 {
			s.Share = t.clusters[m.cluster].hash.Share(m.index) * shares[m.cluster]
		}
		out[k] = s
	}
	return out
}

// ClusterStatus is one cluster's state.
type ClusterStatus struct {
	Name string
	// Weight is its share of new sessions; 0: closed to them.
	Weight int
	// Share is the fraction of new sessions it gets when every instance is
	// live: its weight over the open clusters' that have an instance of
	// weight > 0.
	Share float64
	// Instances are its instances' names, in configuration order.
	Instances []string
}

// Clusters is every cluster's state, by name.
func (t *Table) Clusters() []ClusterStatus {
	shares := t.clusterShares()
	out := make([]ClusterStatus, len(t.clusters))
	for ci, c := range t.clusters {
		out[ci] = ClusterStatus{Name: c.name, Weight: c.weight, Share: shares[ci], Instances: []string{}}
	}
	for _, m := range t.members {
		out[m.cluster].Instances = append(out[m.cluster].Instances, m.instance.Name)
	}
	return out
}

// Cluster is the named cluster's state; false if there is no such cluster.
func (t *Table) Cluster(name string) (ClusterStatus, bool) {
	for _, c := range t.Clusters() {
		if c.Name == name {
			return c, true
		}
	}
	return ClusterStatus{}, false
}

// clusterShares is each cluster's share of new sessions, every instance
// live (rendezvous: a weight over the sum of the weights that can win).
func (t *Table) clusterShares() []float64 {
	shares := make([]float64, len(t.clusters))
	total := 0
	for _, c := range t.clusters {
		if c.hash != nil {
			total += c.weight
		}
	}
	for ci, c := range t.clusters {
		if c.hash != nil && total > 0 {
			shares[ci] = float64(c.weight) / float64(total)
		}
	}
	return shares
}

// ShareSamples is how many keys RoutedShares samples: enough for a share to
// within about a percent, in a fraction of a millisecond.
const ShareSamples = 1 << 13

// routedShares is RoutedShares at one set of load factors.
type routedShares struct {
	factors []float64 // by cluster and hashing index; 0 for instances that are not ramping
	shares  []float64 // by index in members
}

// RoutedShares is, for every configured instance in configuration order (as
// Status), the fraction of all keys routed to it at now, sampled over
// ShareSamples keys. Routing changes within a Table only when a ramp steps
// (SPEC section 3), so the sample is taken once per step and Table, and a
// call between steps costs O(N).
func (t *Table) RoutedShares(now time.Time) []float64 {
	var factors []float64
	for _, c := range t.clusters {
		for i, k := range c.kinds[AnyProtocol] {
			f := 0.0
			if k == rising || k == falling {
				f = c.ramps[i].Factor(now)
			}
			factors = append(factors, f)
		}
	}
	if c := t.routed.Load(); c != nil && slices.Equal(c.factors, factors) {
		return slices.Clone(c.shares)
	}
	owned := make([]int, len(t.members))
	for i := range uint64(ShareSamples) {
		if d := t.RouteHash(hashing.Mix(i), "", now); d.Owner != nil {
			owned[t.byName[d.Owner.Name]]++
		}
	}
	c := &routedShares{factors: factors, shares: make([]float64, len(owned))}
	for k, n := range owned {
		c.shares[k] = float64(n) / ShareSamples
	}
	t.routed.Store(c) // a racing caller stores the same values
	return slices.Clone(c.shares)
}

// Version counts the Tables a Balancer has published; it rises by one per
// change.
func (t *Table) Version() uint64 { return t.version }
