package admin

import (
	"fmt"
	"time"

	"clb/balancer"
	"clb/membership"
)

// Status is the answer of GET /api/v1/status.
type Status struct {
	// Version is the routing table's version; it rises by one per change.
	Version uint64    `json:"version"`
	Time    time.Time `json:"time"`
	// Fingerprint is a hash of everything routing depends on now (16 hex
	// digits): two clb nodes with equal fingerprints route every key alike
	// (SPEC section 11).
	Fingerprint string `json:"fingerprint"`
	// Instances are in configuration order.
	Instances []InstanceStatus `json:"instances"`
	// Clusters are by name (SPEC section 13); a file without clusters:
	// has the one cluster "default".
	Clusters []ClusterStatus `json:"clusters"`
	// Etcd is the shared state's status; absent without etcd.
	Etcd *SharedStatus `json:"etcd,omitempty"`
	// Discovery is each SRV name's look-up state; absent without
	// discovery.sip and discovery.http.
	Discovery []membership.SRVStatus `json:"discovery,omitempty"`
}

// ClusterStatus is one cluster in the status.
type ClusterStatus struct {
	Name string `json:"name"`
	// Weight is its share of new sessions; 0: closed to them.
	Weight int `json:"weight"`
	// Share is the fraction of new sessions it gets with every instance
	// live.
	Share float64 `json:"share"`
	// Sessions is an estimate of the sessions (distinct keys) routed into
	// it in the last minute: a closed cluster is drained when it is 0.
	Sessions  int      `json:"sessions"`
	Instances []string `json:"instances"`
}

// InstanceAddrs is an instance's name and addresses, as GET
// /api/v1/instances lists them.
type InstanceAddrs struct {
	Name string `json:"name"`
	SIP  string `json:"sip,omitempty"`  // transport://host:port
	HTTP string `json:"http,omitempty"` // http://host:port
}

// InstanceStatus is one instance in the status.
type InstanceStatus struct {
	InstanceAddrs
	// Cluster is the cluster the instance is in.
	Cluster string `json:"cluster"`
	Weight  int    `json:"weight"`
	// State is up, ramping, draining, down or disabled.
	State string `json:"state"`
	// LoadFactor is the share of its keys the instance admits now.
	LoadFactor float64 `json:"load_factor"`
	// NextStep is when the load factor steps next; absent when not ramping.
	NextStep *time.Time `json:"next_step,omitempty"`
	// Share is the fraction of all keys routed to it now (sampled).
	Share float64 `json:"share"`
	// FullShare is the fraction it owns when all instances are up and fully
	// ramped: what its weight earns it.
	FullShare float64 `json:"full_share"`
	Health    *Health `json:"health,omitempty"`
	// Requests and Sessions are counted since clb started, SIP and HTTP.
	Requests int64 `json:"requests"`
	Sessions int64 `json:"sessions"`
}

// Health is an instance's health record.
type Health struct {
	Up        bool `json:"up"`
	Successes int  `json:"successes"` // in a row
	Failures  int  `json:"failures"`  // in a row, probes and passive reports
	// LastProbe is absent before the first active probe.
	LastProbe *Probe `json:"last_probe,omitempty"`
	// History is the last rounds of probes, oldest first: true passed.
	History []bool `json:"history"`
}

// Probe is one round of active probes of an instance.
type Probe struct {
	At        time.Time `json:"at"`
	OK        bool      `json:"ok"`
	LatencyMS float64   `json:"latency_ms"`
	Error     string    `json:"error,omitempty"`
}

func addrs(st balancer.InstanceStatus) InstanceAddrs {
	a := InstanceAddrs{Name: st.Instance.Name}
	if !st.Instance.SIP.IsZero() {
		a.SIP = st.Instance.SIP.String()
	}
	if !st.Instance.HTTP.IsZero() {
		a.HTTP = st.Instance.HTTP.String()
	}
	return a
}

// snapshot is the status now.
func (s *Server) snapshot() Status {
	t := s.o.Balancer.Table()
	now := s.o.Now()
	sts := t.Status(now)
	out := Status{Version: t.Version(), Time: now, Fingerprint: fmt.Sprintf("%016x", t.Fingerprint(now)),
		Instances: make([]InstanceStatus, 0, len(sts))}
	if s.o.Shared != nil && s.o.Shared.Status != nil {
		st := s.o.Shared.Status()
		out.Etcd = &st
	}
	if s.o.Discovery != nil {
		out.Discovery = s.o.Discovery()
	}
	routed := t.RoutedShares(now)
	for k, st := range sts {
		is := InstanceStatus{
			InstanceAddrs: addrs(st),
			Cluster:       st.Instance.ClusterName(),
			Weight:        st.Instance.Weight,
			State:         st.State.String(),
			LoadFactor:    st.Factor,
			Share:         routed[k],
			FullShare:     st.Share,
		}
		if !st.NextChange.IsZero() {
			next := st.NextChange
			is.NextStep = &next
		}
		if s.o.Health != nil {
			if h, ok := s.o.Health.Status(st.Instance.Name); ok {
				is.Health = &Health{Up: h.Up, Successes: h.Successes, Failures: h.Failures, History: h.History}
				if is.Health.History == nil {
					is.Health.History = []bool{}
				}
				if !h.Last.At.IsZero() {
					is.Health.LastProbe = &Probe{At: h.Last.At, OK: h.Last.OK,
						LatencyMS: float64(h.Last.Latency) / float64(time.Millisecond), Error: h.Last.Error}
				}
			}
		}
		if s.o.Metrics != nil {
			c := s.o.Metrics.Instance(st.Instance.Name)
			is.Requests, is.Sessions = c.Requests.Load(), c.Sessions.Load()
		}
		out.Instances = append(out.Instances, is)
	}
	for _, c := range t.Clusters() {
		out.Clusters = append(out.Clusters, ClusterStatus{Name: c.Name, Weight: c.Weight, Share: c.Share,
			Sessions: s.o.Metrics.ClusterSessions(c.Name, now), Instances: c.Instances})
	}
	return out
}

// Route is the answer of GET /api/v1/route.
type Route struct {
	Key string `json:"key"`
	// Owner and Replica are where the key goes now and its replica partner;
	// empty when there is none.
	Owner   string `json:"owner"`
	Replica string `json:"replica"`
	// Cluster is the owner's cluster; empty when there is no owner.
	Cluster string `json:"cluster"`
	// Fallback is set when no live instance admitted the key (all ramping).
	Fallback bool `json:"fallback"`
	// Preference is the first instances of the key's preference list,
	// whatever their state.
	Preference []string `json:"preference"`
}
