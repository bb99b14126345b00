package membership

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"clb/config"
)

// SRVOptions configure an SRV source.
type SRVOptions struct {
	// SIP and HTTP are the SRV names looked up (discovery.sip and
	// discovery.http, such as _sip._udp.app.example.com); "" is none.
	SIP, HTTP string
	Lookup    SRVLookup
	// Hosts resolves the records' targets; its Timeout bounds each SRV
	// look-up too.
	Hosts Resolver
	// Refresh is the longest time between two rounds (discovery.refresh);
	// an answer whose TTL is shorter brings the next round forward.
	Refresh time.Duration
	// Logger hears of failed look-ups and records left out; nil logs
	// nothing.
	Logger *zap.Logger
	// Failed, if set, hears of every look-up that failed in a round, SRV
	// or a target's address (its protocol): clb_errors_total{kind="discovery"}.
	Failed func(protocol string)
	// Joined, if set, hears of every instance from DNS that is new to the
	// membership (SetInstances sees it join), with the moment to ramp it
	// from: the round's scheduled moment, which is the same on every clb
	// node asking the same DNS server.
	Joined func(name string, at time.Time)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// SRV is the source of the instances DNS SRV records give (RFC 2782, and
// RFC 3263 for SIP): each record's target host name is an instance's name,
// its port and the target's address the instance's SIP or HTTP address, its
// weight the instance's weight; a target that both names give is one
// instance with both addresses (SPEC section 11).
//
//   - Every clb node must build the same list from the same answer, so the
//     records are sorted (priority, target, port, weight) and never
//     shuffled as RFC 2782's client selection would.
//   - Only the records of the lowest priority an answer holds are used:
//     the others are the backups RFC 2782 keeps for when all of those are
//     unreachable, which clb's replica partners already are; they are
//     logged as left out. A target named twice in one answer (two ports)
//     is one instance: the first record, in that order, is taken.
//   - A look-up that fails or times out keeps the name's last answer
//     (logged, counted, and Status says so); a target whose address look-up
//     fails keeps its last address, and a new one is left out until it
//     resolves.
//   - An answer without records (NXDOMAIN, none of that type, or the "."
//     target of a service not offered) is an answer: its instances leave.
//     The Fanout refuses a list that leaves a listener no instance to send
//     to, and then the last list stays and Status says why.
//   - Rounds run at whole multiples of the interval on the wall clock
//     (every clb node with the same interval asks at the same moments), the
//     interval being Refresh or, if shorter, the answers' TTL (at least 1 s).
//
// Concurrency: Lookup, Refresh, Run, Configure and Status may be called
// from any goroutine; rounds are serialised on SRV.mu, which is held across
// a round's look-ups and its publish. SetInstances, a membership
// subscriber, takes only SRV.joinMu. Lock order: SRV.mu, the Fanout's,
// SRV.joinMu.
type SRV struct {
	mu        sync.Mutex
	o         SRVOptions
	names     []*srvName
	addrs     map[string]netip.Addr // target host → its address last used
	published []config.Instance     // the list last published (or given at start)
	publish   Publish
	refused   string        // why the Fanout refused the last list that changed
	interval  time.Duration // between this round and the next
	warned    map[string]bool
	// status is Status's answer, made at the end of every round: Status
	// does not wait for a round's look-ups.
	status atomic.Pointer[[]SRVStatus]

	joinMu  sync.Mutex
	joined  func(name string, at time.Time) // o.Joined, read by SetInstances
	pending map[string]join                 // instances new to the list being published
	known   map[string]bool                 // the names of the membership's last list
}

type join struct {
	inst config.Instance
	at   time.Time
}

// srvName is one SRV name and its last good answer.
type srvName struct {
	protocol, name, transport string
	answered                  bool        // some look-up has answered
	records                   []SRVRecord // the last answer's, in use
	ttl                       time.Duration
	at                        time.Time // of the last answer
	err                       error     // of the last look-up, nil if it answered
}

// SRVStatus is one SRV name's state, for /api/v1/status.
type SRVStatus struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	// OK: the last look-up answered. Otherwise the last answer (if any)
	// is in use and Error says why.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Instances is how many instances the answer in use gives.
	Instances int `json:"instances"`
	// Answered is when the answer in use came; zero if none has.
	Answered time.Time `json:"answered,omitzero"`
	// Refused is why the membership refused the last list that changed
	// (the last list accepted stays); empty when it took it.
	Refused string `json:"refused,omitempty"`
}

// NewSRV makes the source; Lookup or Run looks the names up.
func NewSRV(o SRVOptions) *SRV {
	s := &SRV{addrs: map[string]netip.Addr{}, known: map[string]bool{}, warned: map[string]bool{}}
	s.configure(o)
	return s
}

func (s *SRV) configure(o SRVOptions) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s.o, s.interval = o, o.Refresh
	s.joinMu.Lock()
	s.joined = o.Joined
	s.joinMu.Unlock()
	var names []*srvName
	for _, n := range []struct{ protocol, name string }{{"sip", o.SIP}, {"http", o.HTTP}} {
		if n.name == "" {
			continue
		}
		i := slices.IndexFunc(s.names, func(x *srvName) bool { return x.protocol == n.protocol && x.name == n.name })
		if i >= 0 {
			names = append(names, s.names[i])
			continue
		}
		transport, _ := config.SRVTransport(n.name)
		names = append(names, &srvName{protocol: n.protocol, name: n.name, transport: transport})
	}
	s.names = names
}

// Configure replaces the options (a reload); the next round uses them.
// The names' last answers are kept for the names that stay.
func (s *SRV) Configure(o SRVOptions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.configure(o)
}

// Lookup is a first round, at start, without publishing: the list the
// answers give (with the names that did not answer left out), to be the
// source's initial list in the Fanout; the error says which look-ups
// failed.
func (s *SRV) Lookup(ctx context.Context) ([]config.Instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.round(ctx)
	s.published = list
	s.snapshot()
	var errs []string
	for _, n := range s.names {
		if n.err != nil {
			errs = append(errs, n.err.Error())
		}
	}
	if len(errs) > 0 {
		return list, fmt.Errorf("discovery: %s", strings.Join(errs, "; "))
	}
	return list, nil
}

// Run publishes through publish, at every round, the list if it changed,
// until ctx ends.
func (s *SRV) Run(ctx context.Context, publish Publish) error {
	s.mu.Lock()
	s.publish = publish
	s.mu.Unlock()
	for {
		s.mu.Lock()
		now := s.o.Now()
		wait := nextRound(now, s.interval).Sub(now)
		s.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
			s.Refresh(ctx)
		}
	}
}

// nextRound is the first whole multiple of interval after now, on the
// wall clock (time.Time's zero is the reference: the same on every node).
func nextRound(now time.Time, interval time.Duration) time.Time {
	return now.Truncate(interval).Add(interval)
}

// Refresh is one round: every name looked up, the targets resolved, and
// the list published if it changed. Instances new to the list are ramped
// (Joined) from the round's scheduled moment.
func (s *SRV) Refresh(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.snapshot()
	at := s.o.Now().Truncate(s.interval)
	list := s.round(ctx)
	if slices.Equal(list, s.published) || s.publish == nil {
		return
	}
	was := map[string]bool{}
	for _, inst := range s.published {
		was[inst.Name] = true
	}
	s.joinMu.Lock()
	s.pending = map[string]join{}
	for _, inst := range list {
		if !was[inst.Name] {
			s.pending[inst.Name] = join{inst, at}
		}
	}
	s.joinMu.Unlock()
	err := s.publish(list)
	s.joinMu.Lock()
	s.pending = nil
	s.joinMu.Unlock()
	if err != nil {
		if s.refused != err.Error() {
			s.o.Logger.Error("instances from DNS refused; the last list stays", zap.Error(err))
		}
		s.refused = err.Error()
		return
	}
	s.logChanges(list)
	s.published, s.refused = list, ""
}

// logChanges logs the instances that join, leave or change.
func (s *SRV) logChanges(list []config.Instance) {
	was := map[string]config.Instance{}
	for _, inst := range s.published {
		was[inst.Name] = inst
	}
	for _, inst := range list {
		old, ok := was[inst.Name]
		delete(was, inst.Name)
		if !ok || old != inst {
			s.o.Logger.Info("instance from DNS", zap.String("instance", inst.Name), zap.Bool("new", !ok),
				zap.Stringer("sip", inst.SIP), zap.Stringer("http", inst.HTTP), zap.Int("weight", inst.Weight))
		}
	}
	for name := range was {
		s.o.Logger.Info("instance left DNS", zap.String("instance", name))
	}
}

// SetInstances is given the membership's every list (a subscriber): an
// instance new to it that the list being published brought is ramped from
// its round's moment.
func (s *SRV) SetInstances(instances []config.Instance) {
	s.joinMu.Lock()
	defer s.joinMu.Unlock()
	known := make(map[string]bool, len(instances))
	for _, inst := range instances {
		known[inst.Name] = true
		if j, ok := s.pending[inst.Name]; ok && !s.known[inst.Name] && j.inst == inst && s.joined != nil {
			s.joined(inst.Name, j.at)
		}
	}
	s.known = known
}

// round looks every name up, keeps each one's last answer where the
// look-up failed, resolves the targets and gives the list, sorted by name.
// It sets the interval to the next round.
func (s *SRV) round(ctx context.Context) []config.Instance {
	answers := make([]SRVAnswer, len(s.names))
	errs := make([]error, len(s.names))
	var wg sync.WaitGroup
	for i, n := range s.names {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, s.o.Hosts.Timeout)
			defer cancel()
			answers[i], errs[i] = s.o.Lookup.LookupSRV(ctx, n.name)
		})
	}
	wg.Wait()
	warned := map[string]bool{}
	// warn logs once while it lasts: until a round has no warning of key.
	warn := func(key, msg string, fields ...zap.Field) {
		warned[key] = true
		if !s.warned[key] {
			s.o.Logger.Warn(msg, fields...)
		}
	}
	s.interval = s.o.Refresh
	for i, n := range s.names {
		if errs[i] == nil && n.err != nil {
			s.o.Logger.Info("SRV look-up answers again", zap.String("name", n.name))
		}
		if n.err = errs[i]; n.err != nil {
			if s.o.Failed != nil {
				s.o.Failed(n.protocol)
			}
			warn("failed "+n.name, "SRV look-up failed; its last answer stays", zap.String("name", n.name),
				zap.Bool("answered_before", n.answered), zap.Error(n.err))
			continue
		}
		n.answered, n.at, n.ttl = true, s.o.Now(), answers[i].TTL
		n.records = activeRecords(answers[i].Records, func(r SRVRecord, why string) {
			warn(fmt.Sprint("left out ", n.name, r), "SRV record left out", zap.String("name", n.name), zap.String("target", r.Target),
				zap.Uint16("port", r.Port), zap.Uint16("priority", r.Priority), zap.String("why", why))
		})
		if len(n.records) > 0 {
			ttl := max(n.ttl, min(time.Second, s.o.Refresh))
			s.interval = min(s.interval, ttl)
		}
	}
	// The targets' addresses.
	var hosts []string
	protocolOf := map[string]string{} // host → the protocol of its first record, for Failed
	for _, n := range s.names {
		for _, r := range n.records {
			if !isIP(r.Target) && !slices.Contains(hosts, r.Target) {
				hosts = append(hosts, r.Target)
				protocolOf[r.Target] = n.protocol
			}
		}
	}
	found := s.o.Hosts.lookupAll(ctx, hosts)
	addrs := map[string]netip.Addr{}
	for _, h := range hosts {
		res := found[h]
		addr, known := s.addrs[h]
		switch {
		case res.err == nil:
			addr = res.addr
		case known:
			warn("address "+h, "address look-up of an SRV target failed; its last address stays", zap.String("target", h),
				zap.Stringer("address", addr), zap.String("error", res.err.Error()))
		default:
			warn("address "+h, "address look-up of an SRV target failed; it is left out until it resolves", zap.String("target", h),
				zap.String("error", res.err.Error()))
		}
		if res.err != nil && s.o.Failed != nil {
			s.o.Failed(protocolOf[h])
		}
		if res.err == nil || known {
			addrs[h] = addr
		}
	}
	s.addrs = addrs
	byName := map[string]int{} // target → its instance's index in list
	var list []config.Instance
	for _, n := range s.names {
		for _, r := range n.records {
			host := r.Target
			if a, ok := addrs[r.Target]; ok {
				host = a.String()
			} else if !isIP(host) {
				continue
			}
			e := config.Endpoint{Transport: n.transport, Host: host, Port: int(r.Port)}
			i, ok := byName[r.Target]
			if !ok {
				i = len(list)
				list = append(list, config.Instance{Name: r.Target, Weight: int(r.Weight)})
				byName[r.Target] = i
			}
			inst := &list[i]
			if ok && inst.Weight != int(r.Weight) {
				warn("weight "+r.Target, "SRV target has another weight for HTTP than for SIP; the SIP record's is its weight",
					zap.String("target", r.Target), zap.Int("sip_weight", inst.Weight), zap.Uint16("http_weight", r.Weight))
			}
			if n.protocol == "sip" {
				inst.SIP = config.SIPAddr{Endpoint: e}
			} else {
				inst.HTTP = config.HTTPAddr{Endpoint: e}
			}
		}
	}
	s.warned = warned
	slices.SortFunc(list, func(a, b config.Instance) int { return strings.Compare(a.Name, b.Name) })
	return list
}

// activeRecords are the records in use: sorted by priority, target, port
// and weight, those of the lowest priority, one per target; left hears of
// every other, with why.
func activeRecords(records []SRVRecord, left func(r SRVRecord, why string)) []SRVRecord {
	sorted := slices.Clone(records)
	slices.SortFunc(sorted, func(a, b SRVRecord) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), strings.Compare(a.Target, b.Target),
			cmp.Compare(a.Port, b.Port), cmp.Compare(a.Weight, b.Weight))
	})
	var out []SRVRecord
	for _, r := range sorted {
		switch {
		case r.Target == "":
			// "." : the service is not offered (RFC 2782); nothing to say.
		case !validInstanceName(r.Target):
			left(r, "the target is not a name an instance can have")
		case len(out) > 0 && r.Priority != out[0].Priority:
			left(r, "a backup: only the lowest priority is used")
		case len(out) > 0 && out[len(out)-1].Target == r.Target:
			left(r, "the target has a record already: an instance is one address")
		case r.Port == 0:
			left(r, "port 0")
		default:
			out = append(out, r)
		}
	}
	return out
}

// validInstanceName is SPEC section 9a's [A-Za-z0-9._-]+, which every
// host name is.
func validInstanceName(s string) bool {
	return s != "" && strings.Trim(strings.ToLower(s), "abcdefghijklmnopqrstuvwxyz0123456789._-") == ""
}

// Status is each name's state after the last round.
func (s *SRV) Status() []SRVStatus {
	if p := s.status.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}

// snapshot makes Status's answer; s.mu is held.
func (s *SRV) snapshot() {
	out := make([]SRVStatus, 0, len(s.names))
	for _, n := range s.names {
		st := SRVStatus{Name: n.name, Protocol: n.protocol, OK: n.err == nil && n.answered, Answered: n.at, Refused: s.refused}
		if n.err != nil {
			st.Error = n.err.Error()
		}
		for _, inst := range s.published {
			if n.protocol == "sip" && !inst.SIP.IsZero() || n.protocol == "http" && !inst.HTTP.IsZero() {
				st.Instances++
			}
		}
		out = append(out, st)
	}
	s.status.Store(&out)
}

// Up reports whether every name's last look-up answered
// (clb_discovery_up).
func (s *SRV) Up() bool {
	for _, st := range s.Status() {
		if !st.OK {
			return false
		}
	}
	return true
}
