// Package metrics owns what clb counts: the metrics of the front ends and
// the health checks, the Go runtime's and the process's, and the
// per-instance counts the admin API's status shows; and /metrics, which it
// writes in the Prometheus text format (version 0.0.4) itself, under the
// names, labels and help texts the Prometheus client library gave them
// before (that library and the protobuf runtime it brought were a quarter
// of clb's binary: expose.go).
//
// Concurrency: every method is safe for concurrent use; a nil *Metrics
// counts nothing, so that a front end may run without one. A series is
// created at its first count, under its family's lock, and cached with the
// instance's counts: counting then takes a load from a direct-mapped front
// cache (else one lock-free map read) and atomic adds, and no allocation. A scrape reads each series atomically but not
// all at one instant (a counter may move between two lines), and takes each
// family's lock only to list its series. SetInstances drops what is
// counted of removed instances; a message being counted for one as it is
// removed may be lost or bring a series of it back (until the next
// removal), a count at worst, never a wrong one.
package metrics

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"clb/balancer"
	"clb/config"
)

// Metrics is clb's metrics.
type Metrics struct {
	reg *registry

	requests     *counterVec
	sessions     *counterVec
	repairs      *counterVec
	retries      *counterVec
	errors       *counterVec
	probes       *counterVec
	probeLatency *histogramVec

	// Written once per label set or instance, then only read: sync.Map,
	// so counting takes no lock that cores contend for.
	cache  sync.Map // seriesKey → *child
	counts sync.Map // instance name → *Counts

	// front is a direct-mapped cache in front of cache, indexed by where
	// the label values' bytes are (constants and instance names, the same
	// strings on every call) and checked by comparing them: a hit is a few
	// loads, not hashing four strings for the sync.Map. gen is bumped by
	// SetInstances: a child from before it is not taken from front.
	front      [frontSlots]atomic.Pointer[child]
	gen        atomic.Uint64
	recent     sync.Map // cluster name → *recentKeys
	lastRecent atomic.Pointer[recentKeys]
}

// Counts are one instance's totals since clb started.
type Counts struct {
	Requests atomic.Int64 // requests routed to it, SIP and HTTP
	Sessions atomic.Int64 // dialogs and HTTP sessions it was given
}

// seriesKey names a series: its family and label values.
type seriesKey struct {
	d      *desc
	values labelValues
}

// child is a cached counter series, and the counts of its instance for
// requests and sessions.
type child struct {
	counter *atomic.Uint64
	counts  *Counts
	key     seriesKey
	gen     atomic.Uint64 // Metrics.gen when it was last found in cache
}

const frontBits = 8
const frontSlots = 1 << frontBits

// frontIndex is k's slot in front: a mix of its family's and its values'
// addresses and lengths. Any slot is correct (a hit is checked), so an
// empty string's address, which may vary, costs a miss at worst.
func frontIndex(k *seriesKey) uint {
	h := uint64(uintptr(unsafe.Pointer(k.d)))
	for _, v := range k.values {
		h = (h ^ uint64(uintptr(unsafe.Pointer(unsafe.StringData(v)))) ^ uint64(len(v))<<48) * 0x9e3779b97f4a7c15
	}
	return uint(h >> (64 - frontBits))
}

// probeBuckets are clb_health_probe_seconds' upper bounds.
var probeBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// New registers clb's metrics, and the Go runtime's and the process's, on a
// new registry. bal, if not nil, is read at each scrape for instance state
// and load factor.
func New(bal func() *balancer.Balancer) *Metrics {
	r := newRegistry()
	m := &Metrics{
		reg: r,
		requests: newCounterVec(r, "clb_requests_total",
			"Requests by protocol, method, instance routed to and outcome.", "protocol", "method", "instance", "outcome"),
		sessions: newCounterVec(r, "clb_sessions_total",
			"Dialogs and HTTP sessions routed, by protocol and instance.", "protocol", "instance"),
		repairs: newCounterVec(r, "clb_sticky_repairs_total",
			"Requests whose session had been served by another instance than its owner now.", "protocol"),
		retries: newCounterVec(r, "clb_retries_total",
			"Requests sent again to the replica partner after the owner could not be reached.", "protocol"),
		errors: newCounterVec(r, "clb_errors_total", "Errors by protocol and kind.", "protocol", "kind"),
		probes: newCounterVec(r, "clb_health_probes_total",
			"Active health probes by instance, protocol and result.", "instance", "protocol", "result"),
		probeLatency: newHistogramVec(r, "clb_health_probe_seconds",
			"Time to the answer of an active health probe.", probeBuckets, "instance", "protocol"),
	}
	registerGo(r)
	registerProcess(r)
	if bal != nil {
		registerState(r, bal, m)
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler { return m.reg }

// counter is v's cached series of values, created at its first count.
func (m *Metrics) counter(v *counterVec, values labelValues) *child {
	k := seriesKey{v.desc, values}
	slot := &m.front[frontIndex(&k)]
	gen := m.gen.Load()
	if c := slot.Load(); c != nil && c.gen.Load() == gen && c.key == k {
		return c
	}
	got, ok := m.cache.Load(k)
	if !ok {
		c := &child{counter: v.with(values), key: k}
		if v == m.requests || v == m.sessions {
			c.counts = m.Instance(values[v.instance])
		}
		got, _ = m.cache.LoadOrStore(k, c)
	}
	// In cache after gen was read, so not dropped since: current. (gen is
	// read first, and SetInstances bumps it after its deletes.)
	c := got.(*child)
	c.gen.Store(gen)
	slot.Store(c)
	return c
}

// Request counts a request: protocol "sip" or "http"; method as the request
// named it (unusual ones count as "other"); instance "" when none took it;
// outcome what became of it (forwarded, refused, dropped, 2xx…5xx, failed).
func (m *Metrics) Request(protocol, method, instance, outcome string) {
	if m == nil {
		return
	}
	if instance == "" {
		instance = "none"
	}
	c := m.counter(m.requests, labelValues{protocol, knownMethod(method), instance, outcome})
	c.counter.Add(1)
	if instance != "none" {
		c.counts.Requests.Add(1)
	}
}

// Session counts a dialog or HTTP session given to instance.
func (m *Metrics) Session(protocol, instance string) {
	if m == nil {
		return
	}
	c := m.counter(m.sessions, labelValues{protocol, instance})
	c.counter.Add(1)
	c.counts.Sessions.Add(1)
}

// Routed counts the key of a request routed into cluster at now, for
// ClusterSessions.
func (m *Metrics) Routed(cluster, key string, now time.Time) {
	if m == nil {
		return
	}
	// The last cluster's sketches first: a string compare (its bytes are
	// the instance's cluster name, the same on every call) rather than a
	// hash for the sync.Map. recent only grows, so it is never stale.
	if r := m.lastRecent.Load(); r != nil && r.cluster == cluster {
		r.add(key, now)
		return
	}
	r, ok := m.recent.Load(cluster)
	if !ok {
		r, _ = m.recent.LoadOrStore(cluster, &recentKeys{cluster: cluster})
	}
	m.lastRecent.Store(r.(*recentKeys))
	r.(*recentKeys).add(key, now)
}

// ClusterSessions estimates the sessions (distinct keys) routed into
// cluster in the minute up to now: 0 when none was.
func (m *Metrics) ClusterSessions(cluster string, now time.Time) int {
	if m == nil {
		return 0
	}
	r, ok := m.recent.Load(cluster)
	if !ok {
		return 0
	}
	return r.(*recentKeys).count(now)
}

// Repair counts a sticky repair.
func (m *Metrics) Repair(protocol string) {
	if m != nil {
		m.counter(m.repairs, labelValues{protocol}).counter.Add(1)
	}
}

// Retry counts a retry on the replica partner.
func (m *Metrics) Retry(protocol string) {
	if m != nil {
		m.counter(m.retries, labelValues{protocol}).counter.Add(1)
	}
}

// Error counts an error of a kind (a short snake_case word).
func (m *Metrics) Error(protocol, kind string) {
	if m != nil {
		m.counter(m.errors, labelValues{protocol, kind}).counter.Add(1)
	}
}

// Probe counts an active health probe and, when it was answered, its time.
func (m *Metrics) Probe(instance, protocol string, ok bool, took time.Duration) {
	if m == nil {
		return
	}
	result := "fail"
	if ok {
		result = "ok"
		// A probe a second or so: the family's lock is no contention.
		m.probeLatency.with(labelValues{instance, protocol}).observe(m.probeLatency.bounds, took.Seconds())
	}
	m.counter(m.probes, labelValues{instance, protocol, result}).counter.Add(1)
}

// Instance is the counts of the instance named name.
func (m *Metrics) Instance(name string) *Counts {
	if c, ok := m.counts.Load(name); ok {
		return c.(*Counts)
	}
	c, _ := m.counts.LoadOrStore(name, &Counts{})
	return c.(*Counts)
}

// SetInstances is given the whole instance list on every change (a
// membership subscriber): the series and counts of instances not in it are
// dropped, so that a removed instance's series end rather than stand at
// their last value, and its labels do not pile up.
func (m *Metrics) SetInstances(instances []config.Instance) {
	if m == nil {
		return
	}
	keep := make(map[string]bool, len(instances)+1)
	keep["none"] = true // requests no instance took
	for _, inst := range instances {
		keep[inst.Name] = true
	}
	gone := map[string]bool{}
	m.counts.Range(func(k, _ any) bool {
		if name := k.(string); !keep[name] {
			gone[name] = true
		}
		return true
	})
	m.cache.Range(func(k, _ any) bool {
		if k := k.(seriesKey); k.d.instance >= 0 && !keep[k.values[k.d.instance]] {
			gone[k.values[k.d.instance]] = true
		}
		return true
	})
	// The families' series first, then the counts, then the cache: a
	// message counted meanwhile through the cache is lost, and one counted
	// after it creates its series and counts afresh.
	for name := range gone {
		m.requests.deleteInstance(name)
		m.sessions.deleteInstance(name)
		m.probes.deleteInstance(name)
		m.probeLatency.deleteInstance(name)
		m.counts.Delete(name)
	}
	m.cache.Range(func(k, _ any) bool {
		if k := k.(seriesKey); k.d.instance >= 0 && gone[k.values[k.d.instance]] {
			m.cache.Delete(k)
		}
		return true
	})
	if len(gone) > 0 {
		m.gen.Add(1) // the children in front may be of gone instances
	}
}

// Method is the label of a method given as bytes, without allocating for
// the known ones.
func Method(b []byte) string {
	for _, m := range methods {
		if string(b) == m {
			return m
		}
	}
	return knownMethod(string(b))
}

// methods are the SIP and HTTP methods labelled as they are, the most
// frequent first.
var methods = [...]string{"INVITE", "ACK", "BYE", "GET", "POST", "CANCEL", "OPTIONS", "REGISTER",
	"SUBSCRIBE", "NOTIFY", "REFER", "INFO", "MESSAGE", "PRACK", "UPDATE", "PUBLISH",
	"HEAD", "PUT", "DELETE", "PATCH", "CONNECT", "TRACE"}

// knownMethod bounds the method label: SIP and HTTP methods as they are,
// anything else "other".
func knownMethod(m string) string {
	for _, k := range methods {
		if m == k {
			return k
		}
	}
	if u := strings.ToUpper(m); u != m && knownMethod(u) != "other" {
		return u
	}
	return "other"
}

var (
	clusterDesc = newDesc("clb_instance_cluster", typeGauge,
		"1 for the cluster the instance is in.", "instance", "cluster")
	cWeightDesc = newDesc("clb_cluster_weight", typeGauge,
		"The cluster's weight: its share of new sessions; 0 is closed to them.", "cluster")
	cSessionsDesc = newDesc("clb_cluster_sessions", typeGauge,
		"Sessions (distinct keys) routed into the cluster in the last minute, estimated.", "cluster")
	stateDesc = newDesc("clb_instance_state", typeGauge,
		"1 for the state the instance is in (up, ramping, draining, down, disabled), 0 for the others.", "instance", "state")
	factorDesc = newDesc("clb_instance_load_factor", typeGauge,
		"The instance's load factor: the share of its keys it admits.", "instance")
	weightDesc  = newDesc("clb_instance_weight", typeGauge, "The instance's configured weight.", "instance")
	fingerprint = newDesc("clb_routing_fingerprint", typeGauge,
		"1, labelled with the hash of everything routing depends on now: clb nodes that route every key alike have one fingerprint.", "fingerprint")
)

// registerState registers the families read from the balancer at each
// scrape, all from one table: instance state, load factor and weight, the
// clusters' weights and sessions, the routing fingerprint.
func registerState(r *registry, bal func() *balancer.Balancer, m *Metrics) {
	r.register(func(add func(*desc, []series)) {
		b := bal()
		if b == nil {
			return
		}
		now, t := time.Now(), b.Table()
		var weights, sessions []series
		for _, cl := range t.Clusters() {
			weights = append(weights, series{values: labelValues{cl.Name}, value: float64(cl.Weight)})
			sessions = append(sessions, series{values: labelValues{cl.Name}, value: float64(m.ClusterSessions(cl.Name, now))})
		}
		add(cWeightDesc, weights)
		add(cSessionsDesc, sessions)
		add(fingerprint, []series{{values: labelValues{fmt.Sprintf("%016x", t.Fingerprint(now))}, value: 1}})
		var clusters, states, factors, instWeights []series
		for _, s := range t.Status(now) {
			name := s.Instance.Name
			clusters = append(clusters, series{values: labelValues{name, s.Instance.ClusterName()}, value: 1})
			for _, st := range []balancer.State{balancer.Up, balancer.Ramping, balancer.Draining, balancer.Down, balancer.Disabled} {
				v := 0.0
				if s.State == st {
					v = 1
				}
				states = append(states, series{values: labelValues{name, st.String()}, value: v})
			}
			factors = append(factors, series{values: labelValues{name}, value: s.Factor})
			instWeights = append(instWeights, series{values: labelValues{name}, value: float64(s.Instance.Weight)})
		}
		add(clusterDesc, clusters)
		add(stateDesc, states)
		add(factorDesc, factors)
		add(weightDesc, instWeights)
	}, clusterDesc, cWeightDesc, cSessionsDesc, stateDesc, factorDesc, weightDesc, fingerprint)
}
