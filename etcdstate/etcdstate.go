// Package etcdstate owns a clb node's session with etcd, the state every clb
// node shares (SPEC section 11), through etcd's JSON gateway (package
// etcdkv):
//
//   - PREFIX/admin/NAME, {"state": "enable"|"disable"|"drain", "at": T}: the
//     operator's last action on an instance. Act writes it (the admin API's
//     enable, disable and drain, and so `clb ctl`'s, go through it when etcd
//     is configured) and applies it at once; every node applies what its
//     watch sees, with at as the ramp's moment, so all of them ramp alike.
//   - PREFIX/clusters/NAME, {"weight": W, "at": T}: a cluster's share of
//     new sessions set at run time (SPEC section 13); SetClusterWeight
//     writes it and every node applies it from its watch.
//   - PREFIX/instances/NAME, {"sip", "http", "weight", "started"}: an
//     instance's own registration, under a lease it keeps alive (Register).
//     State is a membership Source: it publishes the whole list of
//     registrations each time it changes, and a new one is ramped from its
//     started time (balancer.RampFrom), which every node reads alike.
//
// Run loads the prefix once (Range), then follows it from the next revision
// (Watch); etcdkv resumes a watch broken by an etcd restart from the
// revision after the last it delivered, so a return costs no reload. Only
// a watch that ends (its revision compacted) loads the prefix again, and
// what is applied again is applied idempotently: an action is applied once
// per name and revision, and a snapshot of instances is diffed by its
// consumers. While etcd is unreachable, the node routes on the last state
// it had; Act refuses (ErrUnreachable) rather than change this node alone,
// and Status, the log and clb_etcd_up say so.
//
// Concurrency: a State is safe for concurrent use. Run's goroutines (the
// watch and the probe of reachability) end with Run's context. State.mu
// guards what it knows (actions, registrations, reachability) and is held
// while an action is applied to the balancer, so that the order actions are
// applied in is their revisions'. SetInstances is a membership subscriber,
// called under the Fanout's lock; Run publishes without holding State.mu.
// Lock order: membership Fanout.mu, then State.mu, then the balancer's.
package etcdstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"clb/balancer"
	"clb/config"
	"clb/etcdkv"
	"clb/membership"
)

// Registration is the value of PREFIX/instances/NAME.
type Registration struct {
	SIP     string    `json:"sip,omitempty"`  // transport://IP:PORT
	HTTP    string    `json:"http,omitempty"` // http://IP:PORT
	Weight  int       `json:"weight"`
	Started time.Time `json:"started"`
}

// Action is the value of PREFIX/admin/NAME.
type Action struct {
	State string    `json:"state"` // enable, disable or drain
	At    time.Time `json:"at"`
	// From is the load factor an enable's or a drain's ramp starts from
	// at At, as the node that decided it had it (SPEC section 3: from where
	// it is), so that a node that missed what came before (it started
	// later, or was cut off across a compaction) ramps alike. Written by
	// clb; an action without it (another tool's) ramps from where the
	// instance is on each node.
	From *float64 `json:"from,omitempty"`
}

// The directories under the prefix.
const (
	adminDir     = "admin/"
	instancesDir = "instances/"
)

// ErrUnreachable is etcd out of reach: an action is refused rather than
// applied to one node only.
var ErrUnreachable = errors.New("etcd unreachable")

// probeInterval is how often Run checks that etcd answers (a linearizable
// read, so a member without quorum counts as unreachable).
const probeInterval = 500 * time.Millisecond

// probeRetry is how often it checks while etcd is unreachable, and
// reconnectDelay the longest the client waits between attempts to connect
// again: a node sees etcd's return within a few hundred milliseconds, not
// a connection backoff plus a whole probeInterval later (over a second,
// which TestThreeNodesEtcdOutage saw on a busy machine).
const (
	probeRetry     = 100 * time.Millisecond
	reconnectDelay = 250 * time.Millisecond
)

// Options configure a State.
type Options struct {
	Config   config.Etcd
	Balancer *balancer.Balancer
	// Logger hears of reachability changes and of bad values; nil logs
	// nothing.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// State is a node's view of the shared state.
type State struct {
	o      Options
	log    *zap.Logger
	client atomic.Pointer[etcdkv.Client] // while Run runs

	mu        sync.Mutex
	reachable bool
	lastErr   string
	revision  int64                   // the last revision seen
	actions   map[string]action       // by instance name: the latest known
	applied   map[string]int64        // by name: the revision of the action the balancer has
	regs      map[string]registration // the registrations, by name
	known     map[string]bool         // the names of the membership's last list
	rampedAt  map[string]time.Time    // by name: the started time a registration was ramped from
	// weights are the clusters' weights set at run time, by name, and
	// appliedWeights the revision of the one the balancer has.
	weights        map[string]clusterWeight
	appliedWeights map[string]int64
}

type action struct {
	Action
	rev int64 // mod revision
}

type registration struct {
	Registration
	inst config.Instance
}

// New makes a State; Run connects it.
func New(o Options) *State {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &State{o: o, log: o.Logger, lastErr: "not connected yet", actions: map[string]action{},
		applied: map[string]int64{}, regs: map[string]registration{}, known: map[string]bool{},
		rampedAt: map[string]time.Time{}, weights: map[string]clusterWeight{}, appliedWeights: map[string]int64{}}
}

// Status is what /api/v1/status says of etcd.
type Status struct {
	Reachable bool
	// Error is why etcd is unreachable; empty when it is reachable.
	Error string
	// Revision is the last etcd revision this node has seen.
	Revision int64
}

// Status is the state of the session now.
func (s *State) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Reachable: s.reachable, Revision: s.revision}
	if !s.reachable {
		st.Error = s.lastErr
	}
	return st
}

// Up reports whether etcd answered last time it was asked (clb_etcd_up).
func (s *State) Up() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reachable
}

// newClient is a client of the configured endpoints; dialling does not
// block (each call dials as it needs). A broken watch is opened again at
// most reconnectDelay apart, so a node catches up within a second of
// etcd's return.
func newClient(cfg config.Etcd) (*etcdkv.Client, error) {
	return etcdkv.New(etcdkv.Config{Endpoints: cfg.Endpoints, Timeout: cfg.DialTimeout, RetryDelay: reconnectDelay})
}

// Run connects to etcd and follows the prefix until ctx ends, publishing the
// registered instances (a membership Source) and applying admin actions.
// It returns when its goroutines have, with an error only if the client
// cannot be made (a bad endpoint).
func (s *State) Run(ctx context.Context, publish membership.Publish) error {
	client, err := newClient(s.o.Config)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	s.client.Store(client)
	defer func() {
		s.client.Store(nil)
		_ = client.Close()
	}()
	var wg sync.WaitGroup
	wg.Go(func() { s.probe(ctx, client) })
	s.follow(ctx, client, publish)
	wg.Wait()
	return nil
}

var _ membership.Source = (*State)(nil)

// probe asks etcd every probeInterval whether it answers, every
// probeRetry while it does not.
func (s *State) probe(ctx context.Context, client *etcdkv.Client) {
	t := time.NewTimer(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Bounded by the client's timeout (DialTimeout), as every call is.
		res, err := client.Range(ctx, etcdkv.RangeRequest{Key: []byte(s.o.Config.Prefix + adminDir), CountOnly: true})
		if ctx.Err() != nil {
			return
		}
		next := probeInterval
		if err != nil {
			s.unreachable(err)
			next = probeRetry
		} else {
			s.reached(res.Header.Revision)
		}
		t.Reset(next)
	}
}

// reached records an answer from etcd at revision rev.
func (s *State) reached(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reachedLocked(rev)
}

func (s *State) reachedLocked(rev int64) {
	if rev > s.revision {
		s.revision = rev
	}
	if !s.reachable {
		s.reachable = true
		s.log.Info("etcd reachable", zap.Int64("revision", s.revision))
	}
}

// unreachable records a failed call.
func (s *State) unreachable(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err.Error()
	if s.reachable {
		s.reachable = false
		s.log.Warn("etcd unreachable; routing on the last state known", zap.Int64("revision", s.revision), zap.Error(err))
	}
}

// follow loads the prefix and watches it from the next revision, again
// whenever the watch ends (compaction), until ctx ends.
func (s *State) follow(ctx context.Context, client *etcdkv.Client, publish membership.Publish) {
	retry := 100 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := s.load(ctx, client, publish)
		if err != nil {
			if ctx.Err() == nil {
				s.unreachable(err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			retry = min(2*retry, 2*time.Second)
			continue
		}
		retry = 100 * time.Millisecond
		if err := s.watch(ctx, client, publish, rev+1); err != nil && ctx.Err() == nil {
			s.log.Warn("etcd watch ended; loading the prefix again", zap.Int64("revision", rev), zap.Error(err))
		}
	}
}

// load reads the whole prefix, publishes its registrations and applies its
// actions, and returns the revision read.
func (s *State) load(ctx context.Context, client *etcdkv.Client, publish membership.Publish) (int64, error) {
	prefix := []byte(s.o.Config.Prefix)
	res, err := client.Range(ctx, etcdkv.RangeRequest{Key: prefix, RangeEnd: etcdkv.PrefixEnd(prefix)})
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.reachedLocked(res.Header.Revision)
	s.regs = map[string]registration{}
	for _, kv := range res.KVs {
		s.putLocked(string(kv.Key), kv.Value, kv.ModRevision)
	}
	list := s.listLocked()
	s.mu.Unlock()
	s.publish(publish, list)
	s.applyPending()
	return res.Header.Revision, nil
}

// watch follows the prefix from rev until the watch ends.
func (s *State) watch(ctx context.Context, client *etcdkv.Client, publish membership.Publish, rev int64) error {
	// A member that restarts has no leader for a moment: the watch waits
	// for it rather than end (and the prefix be loaded again) at every
	// return; the probe tells a member without quorum.
	prefix := []byte(s.o.Config.Prefix)
	req := etcdkv.WatchRequest{Key: prefix, RangeEnd: etcdkv.PrefixEnd(prefix), StartRevision: rev}
	return client.Watch(ctx, req, func(res *etcdkv.WatchResponse) error {
		s.mu.Lock()
		s.reachedLocked(res.Header.Revision)
		instances := false
		for _, ev := range res.Events {
			key := string(ev.Kv.Key)
			instances = instances || strings.HasPrefix(key, s.o.Config.Prefix+instancesDir)
			if ev.Type == etcdkv.EventDelete {
				s.deleteLocked(key)
			} else {
				s.putLocked(key, ev.Kv.Value, ev.Kv.ModRevision)
			}
		}
		var list []config.Instance
		if instances {
			list = s.listLocked()
		}
		s.mu.Unlock()
		if instances {
			s.publish(publish, list)
		}
		s.applyPending()
		return nil
	})
}

// putLocked takes in a key's value; a bad one is logged and ignored.
func (s *State) putLocked(key string, value []byte, rev int64) {
	rest, ok := strings.CutPrefix(key, s.o.Config.Prefix)
	if !ok {
		return
	}
	if name, ok := strings.CutPrefix(rest, adminDir); ok {
		var a Action
		if err := json.Unmarshal(value, &a); err != nil || !validAction(a.State) || a.At.IsZero() {
			s.log.Error("bad admin action in etcd; ignored", zap.String("key", key), zap.ByteString("value", value), zap.Error(err))
			return
		}
		if old, ok := s.actions[name]; !ok || rev > old.rev {
			s.actions[name] = action{a, rev}
		}
		return
	}
	if name, ok := strings.CutPrefix(rest, clustersDir); ok {
		s.putClusterLocked(key, name, value, rev)
		return
	}
	if name, ok := strings.CutPrefix(rest, instancesDir); ok {
		reg, err := parseRegistration(name, value)
		if err != nil {
			s.log.Error("bad instance registration in etcd; ignored", zap.String("key", key), zap.ByteString("value", value), zap.Error(err))
			delete(s.regs, name)
			return
		}
		s.regs[name] = reg
	}
}

// deleteLocked takes in a deleted key (a registration whose lease expired).
func (s *State) deleteLocked(key string) {
	rest, _ := strings.CutPrefix(key, s.o.Config.Prefix)
	if name, ok := strings.CutPrefix(rest, instancesDir); ok {
		delete(s.regs, name)
	}
	if name, ok := strings.CutPrefix(rest, adminDir); ok {
		delete(s.actions, name) // the instance keeps the state it has
	}
}

// listLocked is the registered instances, by name.
func (s *State) listLocked() []config.Instance {
	list := make([]config.Instance, 0, len(s.regs))
	for _, r := range s.regs {
		list = append(list, r.inst)
	}
	slices.SortFunc(list, func(a, b config.Instance) int { return strings.Compare(a.Name, b.Name) })
	return list
}

// publish hands the registered instances to the membership fan-out, which
// may refuse them (a registration that clashes with clb's listeners): the
// refusal is logged.
func (s *State) publish(publish membership.Publish, list []config.Instance) {
	if err := publish(list); err != nil {
		s.log.Error("registered instances refused; the previous list stays", zap.Error(err))
	}
}

// SetInstances is given the membership's every list (a subscriber): an
// instance that is new to it gets the admin action etcd holds for it, and a
// registered one is ramped from the time it started.
func (s *State) SetInstances(instances []config.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	known := make(map[string]bool, len(instances))
	for _, inst := range instances {
		known[inst.Name] = true
	}
	for name := range s.known {
		if !known[name] { // removed: a return starts anew
			delete(s.applied, name)
			delete(s.rampedAt, name)
		}
	}
	s.known = known
	now := s.o.Now()
	for _, inst := range instances {
		reg, ok := s.regs[inst.Name]
		if !ok || reg.inst != inst || reg.Started.IsZero() || s.rampedAt[inst.Name].Equal(reg.Started) {
			continue // not registered, the file's, or ramped from then already
		}
		s.rampedAt[inst.Name] = reg.Started
		if err := s.o.Balancer.RampFrom(inst.Name, reg.Started, now); err != nil {
			s.log.Warn("ramp of a registered instance", zap.String("instance", inst.Name), zap.Error(err))
		}
	}
	s.applyPendingLocked()
}

// applyPending applies every action the balancer does not have yet.
func (s *State) applyPending() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyPendingLocked()
}

// The actions pending go to the balancer in one batch, so one Table is
// built for all a watch response brought; each is logged as applied once
// that Table routes by it.
func (s *State) applyPendingLocked() {
	s.applyWeightsLocked()
	var applied []string
	s.o.Balancer.Batch(func(w balancer.Writer) {
		for name, a := range s.actions {
			if a.rev > s.applied[name] && s.known[name] && s.applyLocked(w, name, a) {
				applied = append(applied, name)
			}
		}
	})
	for _, name := range applied {
		a := s.actions[name]
		s.log.Info("admin action applied", zap.String("instance", name), zap.String("action", a.State),
			zap.Time("at", a.At), zap.Int64("revision", a.rev))
	}
}

// applyLocked gives the balancer an action, ramping from its at, and says
// whether the balancer took it.
func (s *State) applyLocked(w balancer.Writer, name string, a action) bool {
	var f func(string, time.Time) error
	switch {
	case a.State == "enable" && a.From != nil:
		f = func(name string, at time.Time) error { return w.EnableFrom(name, *a.From, at, s.o.Now()) }
	case a.State == "drain" && a.From != nil:
		f = func(name string, at time.Time) error { return w.DrainFrom(name, *a.From, at, s.o.Now()) }
	case a.State == "enable":
		f = w.Enable
	case a.State == "disable":
		f = w.Disable
	case a.State == "drain":
		f = w.Drain
	}
	if err := f(name, a.At); err != nil {
		if !errors.Is(err, balancer.ErrUnknownInstance) {
			s.log.Error("admin action from etcd", zap.String("instance", name), zap.String("action", a.State), zap.Error(err))
		}
		return false // unknown: applied when the instance appears
	}
	s.applied[name] = a.rev
	return true
}

// Act writes an admin action for every node and applies it here, with now
// as its moment; it answers once etcd has it. An action that changes
// nothing here (a drain of a draining instance) is not written. With etcd
// out of reach it changes nothing and its error wraps ErrUnreachable; for
// an instance this node does not know it wraps balancer.ErrUnknownInstance.
func (s *State) Act(name, state string, now time.Time) error {
	if !validAction(state) {
		return fmt.Errorf("action %q: want enable, disable or drain", state)
	}
	if !s.knows(name) {
		return fmt.Errorf("%w %q", balancer.ErrUnknownInstance, name)
	}
	a := Action{State: state, At: now.UTC().Round(time.Millisecond)}
	if change, err := s.decide(name, &a); err != nil || !change {
		return err
	}
	rev, err := s.put(adminDir+name, a)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reachedLocked(rev)
	if old, ok := s.actions[name]; !ok || rev > old.rev {
		s.actions[name] = action{a, rev}
	}
	s.applyPendingLocked()
	return nil
}

// put writes v, as JSON, under the prefix's key for every node and returns
// the revision etcd gave it; with etcd out of reach its error wraps
// ErrUnreachable.
func (s *State) put(key string, v any) (int64, error) {
	client := s.client.Load()
	if client == nil {
		return 0, fmt.Errorf("%w: not connected", ErrUnreachable)
	}
	value, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	res, err := client.Put(context.Background(), etcdkv.PutRequest{Key: []byte(s.o.Config.Prefix + key), Value: value})
	if err != nil {
		s.unreachable(err)
		return 0, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	return res.Header.Revision, nil
}

// decide says whether a changes the instance here, and sets its From as
// Enable and Drain would start their ramps here at a.At.
func (s *State) decide(name string, a *Action) (bool, error) {
	var st balancer.InstanceStatus
	found := false
	for _, is := range s.o.Balancer.Table().Status(a.At) {
		if is.Instance.Name == name {
			st, found = is, true
		}
	}
	if !found {
		return false, fmt.Errorf("%w %q", balancer.ErrUnknownInstance, name)
	}
	from := st.Factor
	switch {
	case st.State == balancer.Down:
		return true, nil // its admin state is hidden: each node applies it as it can
	case a.State == "enable" && st.State == balancer.Disabled:
		from = 0
	case a.State == "enable":
		if st.State != balancer.Draining {
			return false, nil
		}
	case a.State == "drain":
		if st.State == balancer.Draining || st.State == balancer.Disabled {
			return false, nil
		}
	case a.State == "disable":
		return st.State != balancer.Disabled, nil
	}
	a.From = &from
	return true, nil
}

func (s *State) knows(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.known[name]
}

func validAction(state string) bool {
	return state == "enable" || state == "disable" || state == "drain"
}

// parseRegistration reads PREFIX/instances/NAME's value.
func parseRegistration(name string, value []byte) (registration, error) {
	r := registration{Registration: Registration{Weight: config.DefaultWeight}}
	if err := json.Unmarshal(value, &r.Registration); err != nil {
		return r, err
	}
	r.inst = config.Instance{Name: name, Weight: r.Weight}
	if r.SIP != "" {
		if err := r.inst.SIP.UnmarshalYAML(&yaml.Node{Kind: yaml.ScalarNode, Value: r.SIP}); err != nil {
			return r, fmt.Errorf("sip: %w", err)
		}
	}
	if r.HTTP != "" {
		if err := r.inst.HTTP.UnmarshalYAML(&yaml.Node{Kind: yaml.ScalarNode, Value: r.HTTP}); err != nil {
			return r, fmt.Errorf("http: %w", err)
		}
	}
	return r, nil
}
