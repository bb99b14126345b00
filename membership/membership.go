// Package membership owns the instance list as the sources of truth give it
// (SPEC section 11: the configuration file first; DNS SRV and etcd can be
// more) and hands it to everything that keeps per-instance state: the
// balancer, the health checks, the SIP front end and the metrics.
//
// Sources give whole lists, never events (STYLE 14, as gRPC's resolver gives
// its balancer the whole address list): each time a source's list changes it
// publishes all of it. The Fanout merges the latest list of every source,
// checks the merged list as the file's are checked (config.ValidateInstances),
// offers it to the gate (the balancer, which may refuse it), and hands what
// the gate took to every subscriber, which diffs it against the last it saw.
// A list refused by either check changes nothing: the source's previous list
// stays, and Publish says why.
//
// Merging: sources rank in the order they were added. A name that two
// sources give alike is one instance; given differently (addresses or
// weight), the higher-ranked source's wins (the file wins, SPEC section 11),
// and the conflict is logged once while it lasts.
//
// Host names: the file may name an instance's hosts; the request path must
// never resolve, so every list a source publishes holds IP addresses only
// (ValidateInstances refuses a name). Resolving (resolve.go) is the file's
// source: it resolves the names at load (Resolver.Resolve: a name that does
// not give one address is an error) and again every resolve_interval,
// publishing the whole list when an address changed and keeping a name's
// last address when its look-up fails.
//
// DNS SRV (srv.go, SPEC section 11's discovery.sip and discovery.http):
// SRV is a source whose instances are the targets of SRV records, asked
// for by DNSClient (srvlookup.go), which gives the records' TTL; rounds
// run at whole multiples of discovery.refresh (or of a shorter TTL) on the
// wall clock, a failed look-up keeps the last answer, and an instance that
// joins is ramped from its round's moment, alike on every node.
//
// Concurrency: Publish may be called from any goroutine. Publishes are
// serialised on Fanout.mu, and the gate and the subscribers are called in the
// publishing goroutine under it, one list at a time. Lock order: Fanout.mu
// before every lock the gate and subscribers take (the balancer's, the
// health checker's, the metrics'); none of them may publish.
package membership

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"go.uber.org/zap"

	"clb/config"
)

// Publish hands the Fanout a source's whole current list. An error means the
// merged list was refused and the source's previous list stays.
type Publish func(instances []config.Instance) error

// Source is a source of truth that changes at run time (DNS SRV, etcd). Run
// publishes the source's whole list each time it changes, the first as soon
// as it has one, until ctx ends, and returns when all its goroutines have.
type Source interface {
	Run(ctx context.Context, publish Publish) error
}

// Options configure a Fanout.
type Options struct {
	// Listen is clb's listeners, from which instances must be reachable.
	Listen config.Listen
	// Gate, if set, is offered every merged list before the subscribers and
	// may refuse it; the subscribers hear only of lists it took.
	Gate func(instances []config.Instance) error
	// Subscribers hear every list the gate took, in order. The slice is
	// never changed after: they may keep it, not modify it.
	Subscribers []func(instances []config.Instance)
	// Logger hears of conflicts between sources; nil logs nothing.
	Logger *zap.Logger
}

// Fanout merges the sources' lists and hands the result on.
type Fanout struct {
	o Options

	mu        sync.Mutex
	sources   []*source         // by rank
	current   []config.Instance // the merged list the subscribers have
	conflicts map[conflict]bool // logged, and still there
}

type source struct {
	name      string
	instances []config.Instance
}

// conflict is a name that a lower-ranked source gives otherwise.
type conflict struct{ name, source string }

// New makes a Fanout with no source.
func New(o Options) *Fanout {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return &Fanout{o: o, conflicts: map[conflict]bool{}}
}

// Source adds a source ranked below those added before, whose list is
// initial, and returns its Publish. initial is not handed on: the gate and
// the subscribers must have been built with the merged list it makes (the
// configuration file's instances, at start).
func (f *Fanout) Source(name string, initial []config.Instance) Publish {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &source{name: name, instances: slices.Clone(initial)}
	f.sources = append(f.sources, s)
	f.current = f.merge(nil)
	return func(instances []config.Instance) error { return f.publish(s, instances) }
}

// Run runs src as a source named name until ctx ends.
func (f *Fanout) Run(ctx context.Context, name string, src Source) error {
	return src.Run(ctx, f.Source(name, nil))
}

// Instances is the merged list the subscribers were last given.
func (f *Fanout) Instances() []config.Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.current)
}

func (f *Fanout) publish(s *source, instances []config.Instance) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	instances = slices.Clone(instances) // the source may reuse its slice
	merged := f.merge(map[*source][]config.Instance{s: instances})
	if err := config.ValidateInstances(merged, f.o.Listen); err != nil {
		return fmt.Errorf("instances from %s: %w", s.name, err)
	}
	if f.o.Gate != nil {
		if err := f.o.Gate(merged); err != nil {
			return fmt.Errorf("instances from %s: %w", s.name, err)
		}
	}
	s.instances, f.current = instances, merged
	f.logConflicts()
	for _, sub := range f.o.Subscribers {
		sub(merged)
	}
	return nil
}

// merge is the sources' lists merged by rank, with the lists in next in
// place of those sources' own.
func (f *Fanout) merge(next map[*source][]config.Instance) []config.Instance {
	lists := make([][]config.Instance, len(f.sources))
	for i, s := range f.sources {
		list, ok := next[s]
		if !ok {
			list = s.instances
		}
		lists[i] = list
	}
	return Merge(lists...)
}

// Merge is lists merged as a Fanout merges its sources' lists, the first
// ranked highest: an instance named by a list before is left out (twice in
// one list, both stay: validation says so).
func Merge(lists ...[]config.Instance) []config.Instance {
	var merged []config.Instance
	given := map[string]int{} // name → the list whose instance is in merged
	for i, list := range lists {
		for _, inst := range list {
			if by, ok := given[inst.Name]; ok && by != i {
				continue
			}
			given[inst.Name] = i
			merged = append(merged, inst)
		}
	}
	return merged
}

// logConflicts logs each name given differently by two sources, once while
// it lasts.
func (f *Fanout) logConflicts() {
	kept := map[string]*source{}
	byName := map[string]config.Instance{}
	now := map[conflict]bool{}
	for _, s := range f.sources {
		for _, inst := range s.instances {
			first, ok := kept[inst.Name]
			if !ok {
				kept[inst.Name], byName[inst.Name] = s, inst
				continue
			}
			if first == s || byName[inst.Name] == inst {
				continue
			}
			c := conflict{inst.Name, s.name}
			now[c] = true
			if !f.conflicts[c] {
				f.o.Logger.Error("instance given differently by two sources; the first one's stays",
					zap.String("instance", inst.Name), zap.String("kept", first.name), zap.String("ignored", s.name),
					zap.Stringer("kept_sip", byName[inst.Name].SIP), zap.Stringer("ignored_sip", inst.SIP),
					zap.Stringer("kept_http", byName[inst.Name].HTTP), zap.Stringer("ignored_http", inst.HTTP),
					zap.Int("kept_weight", byName[inst.Name].Weight), zap.Int("ignored_weight", inst.Weight))
			}
		}
	}
	f.conflicts = now
}
