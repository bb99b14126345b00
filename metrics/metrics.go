// Package metrics owns what clb counts: the Prometheus metrics of the front
// ends and the health checks, on a registry of clb's own, and the
// per-instance counts the admin API's status shows.
//
// Concurrency: every method is safe for concurrent use; a nil *Metrics
// counts nothing, so that a front end may run without one. Counters on the
// per-message path are looked up once per label set and cached, so counting
// takes a lock-free map read and an atomic add, and no allocation.
// SetInstances drops what is counted of removed instances; a message being
// counted for one as it is removed may bring a series of it back (until the
// next removal), a count at worst, never a wrong one.
package metrics

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"clb/balancer"
	"clb/config"
)

// Metrics is clb's metrics.
type Metrics struct {
	reg *prometheus.Registry

	requests     *prometheus.CounterVec
	sessions     *prometheus.CounterVec
	repairs      *prometheus.CounterVec
	retries      *prometheus.CounterVec
	errors       *prometheus.CounterVec
	probes       *prometheus.CounterVec
	probeLatency *prometheus.HistogramVec

	// Written once per label set or instance, then only read: sync.Map,
	// so counting takes no lock that cores contend for.
	cache  sync.Map // counterKey → prometheus.Counter
	counts sync.Map // instance name → *Counts
	recent sync.Map // cluster name → *recentKeys
}

// Counts are one instance's totals since clb started.
type Counts struct {
	Requests atomic.Int64 // requests routed to it, SIP and HTTP
	Sessions atomic.Int64 // dialogs and HTTP sessions it was given
}

type counterKey struct {
	vec    *prometheus.CounterVec
	a, b   string
	c, d   string
	labels int
}

// New registers clb's metrics, and the Go runtime's and the process's, on a
// new registry. bal, if not nil, is read at each scrape for instance state
// and load factor.
func New(bal func() *balancer.Balancer) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clb_requests_total",
			Help: "Requests by protocol, method, instance routed to and outcome.",
		}, []string{"protocol", "method", "instance", "outcome"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clb_sessions_total",
			Help: "Dialogs and HTTP sessions routed, by protocol and instance.",
		}, []string{"protocol", "instance"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clb_sticky_repairs_total",
			Help: "Requests whose session had been served by another instance than its owner now.",
		}, []string{"protocol"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clb_retries_total",
			Help: "Requests sent again to the replica partner after the owner could not be reached.",
		}, []string{"protocol"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clb_errors_total",
			Help: "Errors by protocol and kind.",
		}, []string{"protocol", "kind"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clb_health_probes_total",
			Help: "Active health probes by instance, protocol and result.",
		}, []string{"instance", "protocol", "result"}),
		probeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clb_health_probe_seconds",
			Help:    "Time to the answer of an active health probe.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"instance", "protocol"}),
	}
	m.reg.MustRegister(m.requests, m.sessions, m.repairs, m.retries, m.errors, m.probes, m.probeLatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if bal != nil {
		m.reg.MustRegister(newStateCollector(bal, m))
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// counter is vec's counter for the labels, cached.
func (m *Metrics) counter(vec *prometheus.CounterVec, labels ...string) prometheus.Counter {
	k := counterKey{vec: vec, labels: len(labels)}
	for i, l := range labels {
		switch i {
		case 0:
			k.a = l
		case 1:
			k.b = l
		case 2:
			k.c = l
		case 3:
			k.d = l
		}
	}
	if c, ok := m.cache.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c, _ := m.cache.LoadOrStore(k, vec.WithLabelValues(labels...))
	return c.(prometheus.Counter)
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
	m.counter(m.requests, protocol, knownMethod(method), instance, outcome).Inc()
	if instance != "none" {
		m.Instance(instance).Requests.Add(1)
	}
}

// Session counts a dialog or HTTP session given to instance.
func (m *Metrics) Session(protocol, instance string) {
	if m == nil {
		return
	}
	m.counter(m.sessions, protocol, instance).Inc()
	m.Instance(instance).Sessions.Add(1)
}

// Routed counts the key of a request routed into cluster at now, for
// ClusterSessions.
func (m *Metrics) Routed(cluster, key string, now time.Time) {
	if m == nil {
		return
	}
	r, ok := m.recent.Load(cluster)
	if !ok {
		r, _ = m.recent.LoadOrStore(cluster, &recentKeys{})
	}
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
		m.counter(m.repairs, protocol).Inc()
	}
}

// Retry counts a retry on the replica partner.
func (m *Metrics) Retry(protocol string) {
	if m != nil {
		m.counter(m.retries, protocol).Inc()
	}
}

// Error counts an error of a kind (a short snake_case word).
func (m *Metrics) Error(protocol, kind string) {
	if m != nil {
		m.counter(m.errors, protocol, kind).Inc()
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
		m.probeLatency.WithLabelValues(instance, protocol).Observe(took.Seconds())
	}
	m.counter(m.probes, instance, protocol, result).Inc()
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
	m.cache.Range(func(k, _ any) bool {
		if name, ok := m.instanceLabel(k.(counterKey)); ok && !keep[name] {
			gone[name] = true
			m.cache.Delete(k)
		}
		return true
	})
	m.counts.Range(func(k, _ any) bool {
		if name := k.(string); !keep[name] {
			gone[name] = true
			m.counts.Delete(k)
		}
		return true
	})
	for name := range gone {
		labels := prometheus.Labels{"instance": name}
		m.requests.DeletePartialMatch(labels)
		m.sessions.DeletePartialMatch(labels)
		m.probes.DeletePartialMatch(labels)
		m.probeLatency.DeletePartialMatch(labels)
	}
}

// instanceLabel is the instance label of a cached counter's labels, if its
// vector has one. (A probe's latency is observed only with a probe's count,
// so the cache names every instance with a series.)
func (m *Metrics) instanceLabel(k counterKey) (string, bool) {
	switch k.vec {
	case m.requests:
		return k.c, true
	case m.sessions:
		return k.b, true
	case m.probes:
		return k.a, true
	}
	return "", false
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

// stateCollector reads instance state and load factor from the balancer at
// each scrape.
type stateCollector struct {
	bal                          func() *balancer.Balancer
	m                            *Metrics
	stateDesc, factorDesc, wDesc *prometheus.Desc
	clusterDesc                  *prometheus.Desc
	cWeightDesc, cSessionsDesc   *prometheus.Desc
	fpDesc                       *prometheus.Desc
}

func newStateCollector(bal func() *balancer.Balancer, m *Metrics) *stateCollector {
	return &stateCollector{
		bal: bal,
		m:   m,
		clusterDesc: prometheus.NewDesc("clb_instance_cluster",
			"1 for the cluster the instance is in.", []string{"instance", "cluster"}, nil),
		cWeightDesc: prometheus.NewDesc("clb_cluster_weight",
			"The cluster's weight: its share of new sessions; 0 is closed to them.", []string{"cluster"}, nil),
		cSessionsDesc: prometheus.NewDesc("clb_cluster_sessions",
			"Sessions (distinct keys) routed into the cluster in the last minute, estimated.", []string{"cluster"}, nil),
		stateDesc: prometheus.NewDesc("clb_instance_state",
			"1 for the state the instance is in (up, ramping, draining, down, disabled), 0 for the others.",
			[]string{"instance", "state"}, nil),
		factorDesc: prometheus.NewDesc("clb_instance_load_factor",
			"The instance's load factor: the share of its keys it admits.", []string{"instance"}, nil),
		wDesc: prometheus.NewDesc("clb_instance_weight", "The instance's configured weight.", []string{"instance"}, nil),
		fpDesc: prometheus.NewDesc("clb_routing_fingerprint",
			"1, labelled with the hash of everything routing depends on now: clb nodes that route every key alike have one fingerprint.",
			[]string{"fingerprint"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.stateDesc
	ch <- c.factorDesc
	ch <- c.wDesc
	ch <- c.clusterDesc
	ch <- c.cWeightDesc
	ch <- c.cSessionsDesc
	ch <- c.fpDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.bal()
	if b == nil {
		return
	}
	now, t := time.Now(), b.Table()
	for _, cl := range t.Clusters() {
		ch <- prometheus.MustNewConstMetric(c.cWeightDesc, prometheus.GaugeValue, float64(cl.Weight), cl.Name)
		ch <- prometheus.MustNewConstMetric(c.cSessionsDesc, prometheus.GaugeValue, float64(c.m.ClusterSessions(cl.Name, now)), cl.Name)
	}
	ch <- prometheus.MustNewConstMetric(c.fpDesc, prometheus.GaugeValue, 1, fmt.Sprintf("%016x", t.Fingerprint(now)))
	for _, s := range t.Status(now) {
		name := s.Instance.Name
		ch <- prometheus.MustNewConstMetric(c.clusterDesc, prometheus.GaugeValue, 1, name, s.Instance.ClusterName())
		for _, st := range []balancer.State{balancer.Up, balancer.Ramping, balancer.Draining, balancer.Down, balancer.Disabled} {
			v := 0.0
			if s.State == st {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.stateDesc, prometheus.GaugeValue, v, name, st.String())
		}
		ch <- prometheus.MustNewConstMetric(c.factorDesc, prometheus.GaugeValue, s.Factor, name)
		ch <- prometheus.MustNewConstMetric(c.wDesc, prometheus.GaugeValue, float64(s.Instance.Weight), name)
	}
}
