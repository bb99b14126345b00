package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"clb/config"
)

// HostLookup finds a host name's addresses; *net.Resolver is one.
type HostLookup interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

var _ HostLookup = (*net.Resolver)(nil)

// NetLookup is Go's own resolver asking server, or the system's servers
// (/etc/resolv.conf) when server is zero; /etc/hosts is read first either
// way, as the system does.
func NetLookup(server netip.AddrPort) *net.Resolver {
	r := &net.Resolver{PreferGo: true}
	if server.IsValid() {
		addr := server.String()
		r.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	}
	return r
}

// Resolver turns the host names of instances' addresses into the address
// each stands for: an instance is one address, so a name must have one
// IPv4 address, or one IPv6 address, or one of each (then the IPv4 one is
// taken); several of one family are an error, as is none.
type Resolver struct {
	Lookup HostLookup
	// Timeout bounds each look-up.
	Timeout time.Duration
}

// Resolve gives instances with every host name replaced by its address,
// each name looked up once (in parallel). An address that is an IP already
// is kept. The error joins one *config.InstanceError per address whose name
// did not resolve; the list is then nil.
func (r Resolver) Resolve(ctx context.Context, instances []config.Instance) ([]config.Instance, error) {
	found := r.lookupAll(ctx, hostNames(instances))
	var errs []error
	out := slices.Clone(instances)
	for i := range out {
		for _, a := range addressesOf(&out[i], i) {
			if isIP(a.e.Host) {
				continue
			}
			res := found[a.e.Host]
			if res.err != nil {
				errs = append(errs, &config.InstanceError{Key: a.key, Name: out[i].Name, Msg: fmt.Sprintf("%s: %v", a.e, res.err)})
				continue
			}
			a.e.Host = res.addr.String()
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// lookupResult is one host name's address, or why it has none.
type lookupResult struct {
	addr netip.Addr
	err  error
}

// lookupAll looks the names up in parallel, each within the timeout, and
// returns once every look-up has.
func (r Resolver) lookupAll(ctx context.Context, names []string) map[string]lookupResult {
	results := make([]lookupResult, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() { results[i] = r.lookup(ctx, name) })
	}
	wg.Wait()
	found := make(map[string]lookupResult, len(names))
	for i, name := range names {
		found[name] = results[i]
	}
	return found
}

func (r Resolver) lookup(ctx context.Context, name string) lookupResult {
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	addrs, err := r.Lookup.LookupNetIP(ctx, "ip", name)
	if err != nil {
		var dnsErr *net.DNSError
		switch {
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			return lookupResult{err: fmt.Errorf("host name %s not found", name)}
		case errors.As(err, &dnsErr):
			// Not err's own words: they name the system's server even when
			// Dial asked another.
			return lookupResult{err: fmt.Errorf("looking up host name %s: %s", name, dnsErr.Err)}
		}
		return lookupResult{err: fmt.Errorf("looking up host name %s: %w", name, err)}
	}
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.Is4() && !slices.Contains(v4, a):
			v4 = append(v4, a)
		case a.Is6() && !slices.Contains(v6, a):
			v6 = append(v6, a)
		}
	}
	for _, family := range [][]netip.Addr{v4, v6} {
		if len(family) > 1 {
			return lookupResult{err: fmt.Errorf("host name %s has several addresses (%s): an instance is one address", name, joinAddrs(family))}
		}
	}
	switch {
	case len(v4) == 1:
		return lookupResult{addr: v4[0]}
	case len(v6) == 1:
		return lookupResult{addr: v6[0]}
	}
	return lookupResult{err: fmt.Errorf("host name %s has no address", name)}
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// address is one of an instance's addresses, with its protocol and key path.
type address struct {
	e        *config.Endpoint
	protocol string
	key      string
}

func addressesOf(inst *config.Instance, i int) []address {
	var out []address
	if !inst.SIP.IsZero() {
		out = append(out, address{&inst.SIP.Endpoint, "sip", fmt.Sprintf("instances[%d].sip", i)})
	}
	if !inst.HTTP.IsZero() {
		out = append(out, address{&inst.HTTP.Endpoint, "http", fmt.Sprintf("instances[%d].http", i)})
	}
	return out
}

// hostNames are the host names the instances' addresses give, each once.
func hostNames(instances []config.Instance) []string {
	var names []string
	for i := range instances {
		for _, a := range addressesOf(&instances[i], i) {
			if !isIP(a.e.Host) && !slices.Contains(names, a.e.Host) {
				names = append(names, a.e.Host)
			}
		}
	}
	return names
}

func isIP(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}

// ResolvingOptions configure a Resolving source.
type ResolvingOptions struct {
	Resolver Resolver
	// Interval is how long Run waits between rounds.
	Interval time.Duration
	// Publish hands the resolved list on (the Fanout's source).
	Publish Publish
	// Logger hears of changed addresses and failed look-ups; nil logs
	// nothing.
	Logger *zap.Logger
	// Failed, if set, hears of every address whose look-up failed in a
	// round (its protocol, "sip" or "http"): clb_errors_total{kind="resolve"}.
	Failed func(protocol string)
}

// Resolving is the source of the configuration file's instances: it hands
// them on with their host names resolved, and looks the names up again
// every interval, publishing the whole list again when an address changed
// (and only then). A look-up that fails, or that gives several addresses,
// keeps the name's last address, logged and counted. The request path
// never resolves: it sees only the lists Resolving published.
//
// Concurrency: Set, Refresh and Run may be called from any goroutine; they
// are serialised on Resolving.mu, held across a round's look-ups (each
// bounded by the resolver's timeout) and its publish. Lock order:
// Resolving.mu before the Fanout's.
type Resolving struct {
	mu         sync.Mutex
	o          ResolvingOptions
	configured []config.Instance     // as the file gives them
	last       map[string]netip.Addr // host name → the address published
	published  []config.Instance     // the list last published
}

// NewResolving makes the source of configured, whose names resolved gives
// (Resolver.Resolve's answer at start, already in the Fanout: it is not
// published again).
func NewResolving(o ResolvingOptions, configured, resolved []config.Instance) *Resolving {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	r := &Resolving{o: o, configured: slices.Clone(configured), published: slices.Clone(resolved), last: map[string]netip.Addr{}}
	for i := range r.configured {
		for _, protocol := range []string{"sip", "http"} {
			if host := endpointOf(r.configured[i], protocol).Host; host != "" && !isIP(host) {
				r.last[host], _ = netip.ParseAddr(endpointOf(r.published[i], protocol).Host)
			}
		}
	}
	return r
}

// Set replaces the configured instances (a reload) and the resolver and
// interval, resolves the names now and publishes the list. A name looked up
// before keeps its last address if its look-up fails; a new one that does
// not resolve refuses the list, with one *config.InstanceError per address
// (keyed as in the file), and so does the Fanout: then nothing changes.
func (r *Resolving) Set(ctx context.Context, resolver Resolver, interval time.Duration, configured []config.Instance) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.o
	r.o.Resolver, r.o.Interval = resolver, interval
	list, last, err := r.resolve(ctx, configured)
	if err == nil {
		err = r.o.Publish(list)
	}
	if err != nil {
		r.o = prev
		return err
	}
	r.commit(configured, list, last)
	return nil
}

// Refresh is one round: every host name looked up again, and the list
// published if an address changed. A list the Fanout refuses (two
// instances at one address now) is logged, and the last one stays.
func (r *Resolving) Refresh(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	list, last, err := r.resolve(ctx, r.configured)
	if err != nil { // cannot be: every name of the list Set took has an address
		r.o.Logger.Error("host names not resolved", zap.Error(err))
		return
	}
	if slices.Equal(list, r.published) {
		return
	}
	if err := r.o.Publish(list); err != nil {
		r.o.Logger.Error("instances with their new addresses refused; the last addresses stay", zap.Error(err))
		return
	}
	r.commit(r.configured, list, last)
}

// Run refreshes every interval until ctx ends.
func (r *Resolving) Run(ctx context.Context) {
	for {
		r.mu.Lock()
		interval := r.o.Interval
		r.mu.Unlock()
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
			r.Refresh(ctx)
		}
	}
}

// resolve looks configured's host names up and gives the list with the
// addresses in place, and each name's address. A failed look-up keeps the
// name's last address, logged and counted; a name that has none (new in a
// reload) is an error, one *config.InstanceError per address.
func (r *Resolving) resolve(ctx context.Context, configured []config.Instance) ([]config.Instance, map[string]netip.Addr, error) {
	found := r.o.Resolver.lookupAll(ctx, hostNames(configured))
	list := slices.Clone(configured)
	last := map[string]netip.Addr{}
	var errs []error
	for i := range list {
		for _, a := range addressesOf(&list[i], i) {
			name := a.e.Host
			if isIP(name) {
				continue
			}
			res := found[name]
			addr, known := r.last[name]
			switch {
			case res.err == nil:
				addr = res.addr
			case !known:
				errs = append(errs, &config.InstanceError{Key: a.key, Name: list[i].Name, Msg: fmt.Sprintf("%s: %v", a.e, res.err)})
				continue
			default:
				if r.o.Failed != nil {
					r.o.Failed(a.protocol)
				}
				r.o.Logger.Warn("host name look-up failed; the last address stays",
					zap.String("instance", list[i].Name), zap.String("protocol", a.protocol),
					zap.String("host", name), zap.Stringer("address", addr), zap.Error(res.err))
			}
			a.e.Host = addr.String()
			last[name] = addr
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return list, last, nil
}

// commit records a published list, logging each address of an instance
// that remains whose name now stands for another address.
func (r *Resolving) commit(configured, list []config.Instance, last map[string]netip.Addr) {
	was := map[string]config.Instance{}
	for _, inst := range r.published {
		was[inst.Name] = inst
	}
	for i := range list {
		old, ok := was[list[i].Name]
		if !ok {
			continue
		}
		for _, protocol := range []string{"sip", "http"} {
			from, to, host := endpointOf(old, protocol), endpointOf(list[i], protocol), endpointOf(configured[i], protocol).Host
			if from.IsZero() || to.IsZero() || from == to || isIP(host) {
				continue
			}
			r.o.Logger.Info("instance address changed", zap.String("instance", list[i].Name),
				zap.String("protocol", protocol), zap.String("host", host),
				zap.String("from", from.Addr()), zap.String("to", to.Addr()))
		}
	}
	r.configured, r.published, r.last = slices.Clone(configured), list, last
}

func endpointOf(inst config.Instance, protocol string) config.Endpoint {
	if protocol == "sip" {
		return inst.SIP.Endpoint
	}
	return inst.HTTP.Endpoint
}
