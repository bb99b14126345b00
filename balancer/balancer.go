package balancer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"clb/config"
	"clb/hashing"
	"clb/loadfactor"
)

// State is an instance's live state.
type State uint8

const (
	// Up: live at load factor 1.
	Up State = iota
	// Ramping: live, load factor rising to 1.
	Ramping
	// Draining: live, load factor falling to 0; then Disabled.
	Draining
	// Down: failed its health checks.
	Down
	// Disabled: taken out by the operator, or drained.
	Disabled
)

var stateNames = [...]string{Up: "up", Ramping: "ramping", Draining: "draining", Down: "down", Disabled: "disabled"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", s)
}

// Live reports whether an instance in state s may take keys.
func (s State) Live() bool { return s <= Draining }

// ErrUnknownInstance is returned for a name that is not configured.
var ErrUnknownInstance = errors.New("unknown instance")

// adminState is what the operator asked for.
type adminState uint8

const (
	enabled adminState = iota
	draining
	disabled
)

// member is one instance's live state. It is kept by name across reloads and
// changed only by the writer, under Balancer.mu.
type member struct {
	healthy bool
	admin   adminState
	ramp    loadfactor.Ramp
}

func (m *member) state() State {
	switch {
	case !m.healthy:
		return Down
	case m.admin == disabled:
		return Disabled
	case m.admin == draining:
		return Draining
	case m.ramp.Rising():
		return Ramping
	}
	return Up
}

// Balancer owns the instances' live state and publishes Tables.
//
// Lock order: updateMu before mu. Update holds updateMu alone while it builds
// a hashing table (seconds at N = 1000), so that the writers that take only
// mu (SetHealth, Enable, Disable, Drain, Tick) never wait for a build.
type Balancer struct {
	table atomic.Pointer[Table]

	updateMu sync.Mutex // serialises Update
	mu       sync.Mutex // serialises writers' changes and publish
	params   loadfactor.Params
	// instances and hashes change only in Update, holding both locks: read
	// under either.
	instances []config.Instance
	hashes    map[string]*hashing.Table // by cluster; none for a cluster without weight > 0
	// weights are the clusters' weights as set (SetClusterWeights,
	// SetClusterWeight); a cluster not in it has config.DefaultWeight.
	weights  map[string]int
	members  map[string]*member
	observer func(Transition)
	changed  chan struct{} // closed at the next publish
	// buildStarted, if set (tests), is called by Update when it starts
	// building a hashing table, holding updateMu and not mu.
	buildStarted func()
}

// Transition is an instance changing state, as a new Table made it.
type Transition struct {
	Name     string
	From, To State
	// Added and Removed mark an instance a reload added or removed (From or
	// To is then meaningless).
	Added, Removed bool
}

// Observe sets f to hear of every transition, once each, in the writer's
// goroutine (f must not call the Balancer's writer methods).
func (b *Balancer) Observe(f func(Transition)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.observer = f
}

// Changed is closed when the next Table is published.
func (b *Balancer) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// New starts a Balancer with every instance up at load factor 1 (SPEC section
// 8: live until a check says otherwise).
func New(instances []config.Instance, params loadfactor.Params) (*Balancer, error) {
	return NewClusters(instances, nil, params)
}

// NewClusters is New with the clusters' weights (as SetClusterWeights
// takes them) in its first Table.
func NewClusters(instances []config.Instance, weights map[string]int, params loadfactor.Params) (*Balancer, error) {
	if err := checkWeights(weights); err != nil {
		return nil, err
	}
	b := &Balancer{members: map[string]*member{}, weights: cloneWeights(weights), changed: make(chan struct{})}
	for _, inst := range instances {
		b.members[inst.Name] = &member{healthy: true, ramp: loadfactor.Full()}
	}
	b.updateMu.Lock()
	defer b.updateMu.Unlock()
	if err := b.update(instances, params, time.Time{}); err != nil {
		return nil, err
	}
	return b, nil
}

// Table is the current routing state.
func (b *Balancer) Table() *Table { return b.table.Load() }

// Route decides where a request with key goes; see Table.Route.
func (b *Balancer) Route(key, last string, now time.Time) Decision {
	return b.table.Load().Route(key, last, now)
}

// Update swaps in a new instance list and ramp settings. Instances that remain
// keep their live state; new ones start a ramp at now. The hashing table is
// rebuilt only if names or weights changed, and without holding the lock the
// other writers take: state changes made meanwhile are kept in the Table
// Update publishes. Concurrent Updates take effect in the order they start.
func (b *Balancer) Update(instances []config.Instance, params loadfactor.Params, now time.Time) error {
	b.updateMu.Lock()
	defer b.updateMu.Unlock()
	return b.update(instances, params, now)
}

// update is Update holding updateMu. No generation check is needed when it
// publishes: instances and hash change only here, and updateMu is held
// throughout; members changed by the other writers meanwhile are read under
// mu at publish.
func (b *Balancer) update(instances []config.Instance, params loadfactor.Params, now time.Time) error {
	if err := params.Validate(); err != nil {
		return fmt.Errorf("balancer: load factor %w", err)
	}
	hashes := make(map[string]*hashing.Table)
	for cluster, list := range byCluster(instances) {
		old, ok := b.hashes[cluster]
		if ok && sameWeights(byCluster(b.instances)[cluster], list) {
			hashes[cluster] = old
			continue
		}
		in := make([]hashing.Instance, 0, len(list))
		for _, inst := range list {
			if inst.Weight > 0 {
				in = append(in, hashing.Instance{Name: inst.Name, Weight: inst.Weight})
			}
		}
		if len(in) == 0 {
			continue
		}
		if b.buildStarted != nil {
			b.buildStarted()
		}
		hash, err := hashing.New(in)
		if err != nil {
			return fmt.Errorf("balancer: %w", err)
		}
		hashes[cluster] = hash
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	members := make(map[string]*member, len(instances))
	for _, inst := range instances {
		m, ok := b.members[inst.Name]
		if !ok {
			m = &member{healthy: true, ramp: loadfactor.Up(params, 0, now)}
		}
		members[inst.Name] = m
	}
	b.instances = slices.Clone(instances)
	b.hashes, b.members, b.params = hashes, members, params
	b.publish()
	return nil
}

// byCluster is instances by the name of their cluster.
func byCluster(instances []config.Instance) map[string][]config.Instance {
	out := map[string][]config.Instance{}
	for _, inst := range instances {
		out[inst.ClusterName()] = append(out[inst.ClusterName()], inst)
	}
	return out
}

// ErrUnknownCluster is returned for a cluster that is neither set nor has
// an instance.
var ErrUnknownCluster = errors.New("unknown cluster")

// cloneWeights copies weights: a published Table never shares a map a
// writer changes.
func cloneWeights(weights map[string]int) map[string]int {
	out := make(map[string]int, len(weights))
	for name, w := range weights {
		out[name] = w
	}
	return out
}

// ErrBadWeight is returned for a cluster weight out of range.
var ErrBadWeight = errors.New("bad weight")

// SetClusterWeights sets the clusters' weights, as the file gives them: the
// clusters named are known even with no instance; the others have
// config.DefaultWeight.
//
// A Table is published only if routing or the clusters listed change.
func (b *Balancer) SetClusterWeights(weights map[string]int) error {
	if err := checkWeights(weights); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	same := true
	have := byCluster(b.instances)
	effective := func(w map[string]int, name string) (int, bool) {
		v, ok := w[name]
		if !ok {
			v = config.DefaultWeight
		}
		return v, ok || len(have[name]) > 0
	}
	for _, pair := range [2][2]map[string]int{{b.weights, weights}, {weights, b.weights}} {
		for name := range pair[0] {
			w0, listed0 := effective(pair[0], name)
			w1, listed1 := effective(pair[1], name)
			same = same && w0 == w1 && listed0 == listed1
		}
	}
	b.weights = cloneWeights(weights)
	if !same {
		b.publish()
	}
	return nil
}

func checkWeights(weights map[string]int) error {
	for name, w := range weights {
		if w < 0 || w > config.MaxWeight {
			return fmt.Errorf("%w: cluster %q: %d must be from 0 to %d", ErrBadWeight, name, w, config.MaxWeight)
		}
	}
	return nil
}

// SetClusterWeight changes one cluster's share of new sessions (SPEC
// section 13); 0 closes it to them. Sessions that name an instance of a
// cluster stay in it whatever its weight.
func (b *Balancer) SetClusterWeight(name string, weight int) error {
	if weight < 0 || weight > config.MaxWeight {
		return fmt.Errorf("%w: cluster %q: %d must be from 0 to %d", ErrBadWeight, name, weight, config.MaxWeight)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.weights[name]; !ok && len(byCluster(b.instances)[name]) == 0 {
		return fmt.Errorf("%w %q", ErrUnknownCluster, name)
	}
	if w, ok := b.weights[name]; ok && w == weight {
		return nil
	}
	b.weights = cloneWeights(b.weights)
	b.weights[name] = weight
	b.publish()
	return nil
}

// sameWeights reports whether a and b give the same hashing table.
func sameWeights(a, b []config.Instance) bool {
	weights := make(map[string]int, len(a))
	for _, inst := range a {
		weights[inst.Name] = inst.Weight
	}
	if len(a) != len(b) {
		return false
	}
	for _, inst := range b {
		if w, ok := weights[inst.Name]; !ok || w != inst.Weight {
			return false
		}
	}
	return true
}

// SetHealth records a health verdict. An instance that comes back up starts a
// ramp at now; a draining one that went down has lost its keys already and
// ends up disabled.
func (b *Balancer) SetHealth(name string, healthy bool, now time.Time) error {
	return b.change(name, func(m *member) bool {
		if m.healthy == healthy {
			return false
		}
		m.healthy = healthy
		if healthy {
			if m.admin == draining {
				m.admin = disabled
			}
			m.ramp = loadfactor.Up(b.params, 0, now)
		}
		return true
	})
}

// Enable returns a disabled or draining instance to service; its load factor
// ramps up from where it is (from start if it was disabled).
func (b *Balancer) Enable(name string, now time.Time) error {
	return b.change(name, b.enable(now))
}

func (b *Balancer) enable(now time.Time) func(*member) bool {
	return func(m *member) bool {
		if m.admin == enabled {
			return false
		}
		f := 0.0
		if m.admin == draining {
			f = m.ramp.Factor(now)
		}
		m.admin, m.ramp = enabled, loadfactor.Up(b.params, f, now)
		return true
	}
}

// Disable takes an instance out at once: its keys go to their replica
// partners.
func (b *Balancer) Disable(name string, now time.Time) error {
	return b.change(name, disable)
}

func disable(m *member) bool {
	if m.admin == disabled {
		return false
	}
	m.admin = disabled
	return true
}

// Drain runs an instance's load factor down to 0 from where it is, so its
// keys move to their replica partners a slice at a time; then it is disabled.
func (b *Balancer) Drain(name string, now time.Time) error {
	return b.change(name, b.drain(now))
}

func (b *Balancer) drain(now time.Time) func(*member) bool {
	return func(m *member) bool {
		if m.admin != enabled {
			return false
		}
		m.admin, m.ramp = draining, loadfactor.Down(b.params, m.ramp.Factor(now), now)
		return true
	}
}

// Tick retires ramps that have ended by now: a finished ramp up leaves the
// instance Up, a finished drain leaves it Disabled. Routing does not wait for
// Tick (a Table follows its ramps by itself); Tick makes State say so.
func (b *Balancer) Tick(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	changed := false
	for _, m := range b.members {
		if m.ramp.Falling() && m.ramp.Done(now) && m.admin == draining {
			m.admin, m.ramp, changed = disabled, loadfactor.Full(), true
		}
		if m.ramp.Rising() && m.ramp.Done(now) {
			m.ramp, changed = loadfactor.Full(), true
		}
	}
	if changed {
		b.publish()
	}
}

// change applies f to the named member and publishes a new Table if f says
// it changed something.
func (b *Balancer) change(name string, f func(*member) bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	changed, err := b.changeLocked(name, f)
	if changed {
		b.publish()
	}
	return err
}

// changeLocked applies f to the named member, holding mu, and says whether
// f changed it.
func (b *Balancer) changeLocked(name string, f func(*member) bool) (bool, error) {
	m, ok := b.members[name]
	if !ok {
		return false, fmt.Errorf("%w %q", ErrUnknownInstance, name)
	}
	return f(m), nil
}

// publish builds a Table from the current state and makes it current.
func (b *Balancer) publish() {
	t := &Table{members: make([]memberView, len(b.instances)), byName: make(map[string]int, len(b.instances)), version: 1}
	t.buildClusters(b.instances, b.weights, b.hashes)
	old := b.table.Load()
	if old != nil {
		t.version = old.version + 1
	}
	for k := range b.instances {
		inst := &b.instances[k]
		m := b.members[inst.Name]
		st := m.state()
		if b.observer != nil && old != nil { // the first Table changes nothing
			if j, ok := old.byName[inst.Name]; !ok {
				b.observer(Transition{Name: inst.Name, To: st, Added: true})
			} else if was := old.members[j].state; was != st {
				b.observer(Transition{Name: inst.Name, From: was, To: st})
			}
		}
		ci := t.clusterIndex(inst.ClusterName())
		c := t.clusters[ci]
		index := -1
		if c.hash != nil {
			if i, ok := c.hash.Index(inst.Name); ok {
				index = i
			}
		}
		t.members[k] = memberView{instance: inst, state: st, ramp: m.ramp, cluster: ci, index: index}
		t.byName[inst.Name] = k
		if index < 0 {
			continue
		}
		c.instances[index] = inst
		c.ramps[index] = m.ramp
		k := full
		switch {
		case !st.Live():
			k = out
		case st == Draining:
			k = falling
		case st == Ramping:
			k = rising
		}
		c.kinds[AnyProtocol][index] = k
		c.kinds[SIP][index], c.kinds[HTTP][index] = out, out
		if !inst.SIP.IsZero() {
			c.kinds[SIP][index] = k
		}
		if !inst.HTTP.IsZero() {
			c.kinds[HTTP][index] = k
		}
	}
	if old != nil && b.observer != nil {
		for _, m := range old.members {
			if _, ok := t.byName[m.instance.Name]; !ok {
				b.observer(Transition{Name: m.instance.Name, From: m.state, Removed: true})
			}
		}
	}
	b.table.Store(t)
	close(b.changed)
	b.changed = make(chan struct{})
}

// buildClusters makes t's clusters, by name: those with a weight set and
// those of instances, each with its hashing table and empty per-index
// state for publish to fill.
func (t *Table) buildClusters(instances []config.Instance, weights map[string]int, hashes map[string]*hashing.Table) {
	var names []string
	for name := range weights {
		names = append(names, name)
	}
	for _, inst := range instances {
		names = append(names, inst.ClusterName())
	}
	if len(names) == 0 {
		names = append(names, config.DefaultCluster)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	t.clusters = make([]*routing, len(names))
	cw := make([]int, len(names))
	for ci, name := range names {
		c := &routing{name: name, weight: config.DefaultWeight, hash: hashes[name]}
		if w, ok := weights[name]; ok {
			c.weight = w
		}
		if ci == 0 {
			t.routing, c = *c, &t.routing
		}
		if c.hash != nil {
			n := c.hash.Len()
			c.instances, c.ramps = make([]*config.Instance, n), make([]loadfactor.Ramp, n)
			for p := range c.kinds {
				c.kinds[p] = make([]kind, n)
			}
			if t.keyHash == nil {
				t.keyHash = c.hash
			}
		}
		t.clusters[ci], cw[ci] = c, c.weight
	}
	t.simple = len(names) == 1 && t.weight > 0
	if !t.simple {
		t.choice = hashing.NewChoice(names, cw)
	}
}

// clusterIndex is the index of the named cluster in t.clusters.
func (t *Table) clusterIndex(name string) int {
	i, _ := slices.BinarySearchFunc(t.clusters, name, func(c *routing, name string) int { return strings.Compare(c.name, name) })
	return i
}
