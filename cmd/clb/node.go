package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"clb/accesslog"
	"clb/admin"
	"clb/balancer"
	"clb/certs"
	"clb/config"
	"clb/etcdstate"
	"clb/health"
	"clb/httpproxy"
	"clb/loadfactor"
	"clb/membership"
	"clb/metrics"
	"clb/rawtcp"
	"clb/sip"
)

// node is one running clb: the balancer and everything around it, built from
// a configuration and reloadable from its file.
//
// Instances reach the balancer, health, the SIP front end and metrics only
// through members, whose sources rank the file (fed by reload) first, then
// DNS SRV, then etcd. Lock order: node.mu, then the SRV source's, then the
// membership Fanout's, then the balancer's and the health checker's.
type node struct {
	log     *zap.Logger
	bal     *balancer.Balancer
	metrics *metrics.Metrics
	health  *health.Checker
	sip     *sip.Server       // nil without listen.sip
	http    *httpproxy.Server // nil without listen.http
	https   *httpproxy.Server // nil without listen.https
	// tls is the TLS material in force (tls: of the file), swapped by
	// reload; every TLS listener and dial reads it per handshake.
	tls     *certs.Store
	admin   *admin.Server    // nil without listen.admin
	etcd    *etcdstate.State // nil without etcd:
	members *membership.Fanout
	// file is the source of the file's instances, their host names
	// resolved: reload sets its list, run refreshes it.
	file *membership.Resolving
	// srv is the source of the instances DNS SRV records give, ranked after
	// the file; nil without discovery.sip and discovery.http. dnsPublish
	// is its Publish.
	srv        *membership.SRV
	dnsPublish membership.Publish
	// params are the ramp settings the balancer is given with each
	// instance list; a reload sets them just before it publishes its list.
	params atomic.Pointer[loadfactor.Params]
	access *accesslog.Log // log.access, swapped by reload
	sd     notifier       // hears of reloads; zero: clb is not a systemd service

	mu  sync.Mutex // serialises reloads
	cfg *config.Config
}

// newNode builds a node and binds its listeners.
func newNode(cfg *config.Config, log *zap.Logger) (*node, error) {
	srv := newSRV(cfg)
	start, err := resolveInstances(cfg, srv)
	if err != nil {
		return nil, err
	}
	if start.lookup != nil {
		log.Warn("SRV look-up failed at start; clb starts without its instances and asks again", zap.Error(start.lookup))
	}
	instances := start.merged
	bal, err := newBalancer(cfg, instances)
	if err != nil {
		return nil, err
	}
	material, err := certs.Load(cfg.TLS.Files(), time.Now())
	if err != nil {
		return nil, fmt.Errorf("%s: tls: %w", cfg.File, err)
	}
	n := &node{log: log, bal: bal, cfg: cfg, access: accesslog.New(log), tls: certs.NewStore(material), srv: srv}
	n.access.Set(cfg.Log.Access, cfg.Log.AccessSample)
	params := cfg.LoadFactor.Params()
	n.params.Store(&params)
	n.metrics = metrics.New(func() *balancer.Balancer { return bal })
	n.health = health.New(bal, n.metrics, log.Named("health"), nil)
	n.health.SetTLS(n.tls)
	n.health.SetJoinRamps(cfg.Etcd != nil || cfg.Listen.Advertise != "")
	n.health.Update(cfg.Health, instances)
	transitions := log.Named("balancer")
	bal.Observe(func(t balancer.Transition) {
		switch {
		case t.Added:
			transitions.Info("instance added", zap.String("instance", t.Name), zap.Stringer("state", t.To))
		case t.Removed:
			transitions.Info("instance removed", zap.String("instance", t.Name))
		default:
			transitions.Info("instance state", zap.String("instance", t.Name),
				zap.Stringer("from", t.From), zap.Stringer("to", t.To))
		}
	})
	if len(cfg.Listen.SIP) > 0 {
		n.sip, err = sip.NewServer(sip.ServerOptions{
			ProxyOptions: sip.ProxyOptions{
				Balancer:   bal,
				Rules:      cfg.Keys.SIP,
				Instances:  instances,
				Logger:     log.Named("sip"),
				RetryAfter: cfg.Health.Interval,
				Metrics:    n.metrics,
				Report:     n.health.Report,
				Limits:     cfg.Limits,
				Advertise:  cfg.Listen.Advertise,
				Access:     n.access,
			},
			Listen:  cfg.Listen.SIP,
			TLS:     n.tls,
			WS:      cfg.WS,
			FlowKey: cfg.TLS.FlowKey,
		})
		if err != nil {
			return nil, err
		}
	}
	subscribers := []func([]config.Instance){n.health.SetInstances, n.metrics.SetInstances}
	if n.sip != nil {
		subscribers = append(subscribers, n.sip.SetInstances)
	}
	if srv != nil {
		srv.Configure(n.srvOptions(cfg)) // the node's hooks; the first answer stays
		subscribers = append(subscribers, srv.SetInstances)
		n.metrics.DiscoveryUp(srv.Up)
	}
	if cfg.Etcd != nil {
		subscribers = append(subscribers, n.startEtcd(cfg, instances))
	}
	n.members = membership.New(membership.Options{
		Listen: cfg.Listen,
		// The balancer may refuse a list: it must build its hashing table.
		Gate:        func(in []config.Instance) error { return bal.Update(in, *n.params.Load(), time.Now()) },
		Subscribers: subscribers,
		Logger:      log.Named("membership"),
	})
	n.file = membership.NewResolving(membership.ResolvingOptions{
		Resolver: resolverOf(cfg),
		Interval: cfg.Discovery.ResolveInterval,
		Publish:  n.members.Source("file", start.file),
		Logger:   log.Named("membership"),
		Failed:   func(protocol string) { n.metrics.Error(protocol, "resolve") },
	}, cfg.Instances, start.file)
	if srv != nil {
		n.dnsPublish = n.members.Source("dns", start.dns)
	}
	httpOptions := func(name string) httpproxy.Options {
		return httpproxy.Options{
			Balancer:    bal,
			Rules:       cfg.Keys.HTTP,
			Limits:      cfg.HTTP,
			Logger:      log.Named(name),
			RetryAfter:  cfg.Health.Interval,
			Report:      n.health.Report,
			Metrics:     n.metrics,
			FloodLimits: cfg.Limits,
			Access:      n.access,
			TLS:         n.tls,
		}
	}
	if !cfg.Listen.HTTP.IsZero() {
		n.http, err = httpproxy.NewServer(cfg.Listen.HTTP.Addr(), httpOptions("http"))
		if err != nil {
			n.close()
			return nil, err
		}
	}
	if !cfg.Listen.HTTPS.IsZero() {
		ln, err := net.Listen("tcp", cfg.Listen.HTTPS.Addr())
		if err != nil {
			n.close()
			return nil, fmt.Errorf("https: %w", err)
		}
		raw := rawtcp.Listener{TCPListener: ln.(*net.TCPListener)} // TLS records by raw system calls too
		n.https = httpproxy.New(tls.NewListener(raw, n.tls.ServerConfig("h2", "http/1.1")), "https", httpOptions("https"))
	}
	if !cfg.Listen.Admin.IsZero() {
		n.admin, err = admin.NewServer(cfg.Listen.Admin.Addr(), admin.Options{
			Balancer: bal,
			Health:   n.health,
			Metrics:  n.metrics,
			Token:    cfg.Admin.Token,
			Reload:   n.reload,
			Logger:   log.Named("admin"),
			Shared:   n.shared(),
			// nil without discovery.sip and discovery.http.
			Discovery: n.discoveryStatus(),
			// nil without etcd: the balancer's, this node alone.
			ClusterWeight: n.sharedClusterWeight(),
		})
		if err != nil {
			n.close()
			return nil, err
		}
	}
	return n, nil
}

// close releases the listeners of a node that will not run.
func (n *node) close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n.sip != nil {
		_ = n.sip.Serve(ctx)
	}
	if n.http != nil {
		_ = n.http.Serve(ctx)
	}
	if n.https != nil {
		_ = n.https.Serve(ctx)
	}
}

// fields say where the node listens, for the start log.
func (n *node) fields() []zap.Field {
	var f []zap.Field
	if n.sip != nil {
		f = append(f, zap.Strings("sip", n.sip.Listeners()))
	}
	if n.http != nil {
		f = append(f, zap.String("http", n.http.Addr()))
	}
	if n.https != nil {
		f = append(f, zap.String("https", n.https.Addr()))
	}
	if n.admin != nil {
		f = append(f, zap.String("admin", n.admin.Addr()))
	}
	return f
}

// run serves until ctx ends; a value on hup reloads the file. It returns when
// every server has stopped: HTTP requests in flight get http.grace.
func (n *node) run(ctx context.Context, hup <-chan struct{}) error {
	var servers []func(context.Context) error
	if n.sip != nil {
		servers = append(servers, n.sip.Serve)
	}
	if n.http != nil {
		servers = append(servers, n.http.Serve)
	}
	if n.https != nil {
		servers = append(servers, n.https.Serve)
	}
	if n.admin != nil {
		grace := n.cfg.HTTP.Grace
		servers = append(servers, func(ctx context.Context) error { return n.admin.Serve(ctx, grace) })
	}
	servers = append(servers, func(ctx context.Context) error { n.health.Run(ctx); return nil })
	servers = append(servers, func(ctx context.Context) error { n.file.Run(ctx); return nil })
	if n.srv != nil {
		servers = append(servers, func(ctx context.Context) error { return n.srv.Run(ctx, n.dnsPublish) })
	}
	if n.etcd != nil {
		servers = append(servers, n.runEtcd)
	}
	servers = append(servers, func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				_, _ = n.reload()
			}
		}
	})
	errs := make(chan error, len(servers))
	for _, serve := range servers {
		go func() { errs <- serve(ctx) }()
	}
	var first error
	for range servers { // each has returned, and so has every goroutine it started
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// reload reads the configuration file again and swaps it in; a file that
// does not validate, or that changes what only a restart can change, is
// refused and the running configuration stays.
func (n *node) reload() (admin.Reloaded, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sd.reloading()
	defer n.sd.ready()
	old := n.cfg
	cfg, err := config.Load(old.File)
	if err == nil {
		err = restartOnly(old, cfg)
	}
	// The TLS files are read again whether or not their names changed: a
	// renewed certificate is the usual reason for a reload.
	var material *certs.Material
	if err == nil {
		if material, err = certs.Load(cfg.TLS.Files(), time.Now()); err != nil {
			err = fmt.Errorf("%s: tls: %w", cfg.File, err)
		}
	}
	if err != nil {
		n.log.Error("reload refused; the running configuration stays", zap.String("config", old.File), zap.Error(err))
		return admin.Reloaded{}, err
	}
	// The instances go first, through the membership fan-out: if they are
	// refused, nothing of the file has changed. (A list another source
	// publishes meanwhile gets the new ramp settings: they are valid.)
	params := cfg.LoadFactor.Params()
	oldParams := n.params.Swap(&params)
	// The clusters' weights go before the instances, so that a cluster
	// added closed never takes a new session, with those of clusters
	// leaving until their instances have left.
	oldWeights, weights := n.clusterWeights(), reloadedWeights(old, cfg, n.clusterWeights())
	during := cloneWeights(weights)
	for name, w := range oldWeights {
		if _, ok := during[name]; !ok {
			during[name] = w
		}
	}
	_ = n.bal.SetClusterWeights(during) // validated by the file's checks
	err = n.file.Set(context.Background(), resolverOf(cfg), cfg.Discovery.ResolveInterval, cfg.Instances)
	if err != nil {
		err = cfg.Locate(err)
		n.params.Store(oldParams)
		_ = n.bal.SetClusterWeights(oldWeights)
		n.log.Error("reload refused; the running configuration stays", zap.String("config", old.File), zap.Error(err))
		return admin.Reloaded{}, err
	}
	_ = n.bal.SetClusterWeights(weights)
	if n.srv != nil {
		n.srv.Configure(n.srvOptions(cfg)) // from the next round
	}
	n.health.SetConfig(cfg.Health)
	n.tls.Swap(material) // new connections from now on; open ones go on
	// New limits start every source's bucket anew: only when they change.
	limitsChanged := !reflect.DeepEqual(old.Limits, cfg.Limits)
	if n.sip != nil {
		n.sip.SetRules(cfg.Keys.SIP)
		n.sip.SetWS(cfg.WS)
		if limitsChanged {
			n.sip.SetLimits(cfg.Limits)
		}
	}
	for _, h := range []*httpproxy.Server{n.http, n.https} {
		if h == nil {
			continue
		}
		h.Reload(cfg.Keys.HTTP)
		if limitsChanged {
			h.SetLimits(cfg.Limits)
		}
	}
	if n.admin != nil {
		n.admin.SetToken(cfg.Admin.Token)
	}
	n.access.Set(cfg.Log.Access, cfg.Log.AccessSample)
	n.cfg = cfg
	res := admin.Reloaded{Instances: len(cfg.Instances), Added: []string{}, Removed: []string{}}
	names := func(c *config.Config) []string {
		var s []string
		for _, inst := range c.Instances {
			s = append(s, inst.Name)
		}
		return s
	}
	oldNames, newNames := names(old), names(cfg)
	for _, name := range newNames {
		if !slices.Contains(oldNames, name) {
			res.Added = append(res.Added, name)
		}
	}
	for _, name := range oldNames {
		if !slices.Contains(newNames, name) {
			res.Removed = append(res.Removed, name)
		}
	}
	n.log.Info("configuration reloaded", zap.String("config", cfg.File), zap.Int("instances", res.Instances),
		zap.Strings("added", res.Added), zap.Strings("removed", res.Removed))
	return res, nil
}

// clusterWeights is the balancer's cluster weights now, as the file and
// POST /api/v1/clusters/{name}/weight set them.
func (n *node) clusterWeights() map[string]int {
	w := map[string]int{}
	for _, c := range n.bal.Table().Clusters() {
		w[c.Name] = c.Weight
	}
	return w
}

// reloadedWeights is the cluster weights after a reload from old to cfg: the
// file's, but a cluster whose weight the file leaves as it was keeps the
// weight set at run time (an upgrade in progress survives a reload that
// changes something else).
func reloadedWeights(old, cfg *config.Config, now map[string]int) map[string]int {
	was, out := old.ClusterWeights(), cfg.ClusterWeights()
	for name, w := range out {
		if cur, ok := now[name]; ok && was[name] == w {
			if _, inOld := was[name]; inOld {
				out[name] = cur
			}
		}
	}
	return out
}

func cloneWeights(w map[string]int) map[string]int {
	out := make(map[string]int, len(w))
	for k, v := range w {
		out[k] = v
	}
	return out
}

// restartOnly refuses a reload that changes clb's listeners or the HTTP
// front end's limits, which are bound at start.
func restartOnly(old, cfg *config.Config) error {
	if !reflect.DeepEqual(old.Listen, cfg.Listen) {
		return fmt.Errorf("%s: listen: changed; listeners are bound at start: restart clb to apply", cfg.File)
	}
	if !reflect.DeepEqual(old.Etcd, cfg.Etcd) {
		return fmt.Errorf("%s: etcd: changed; the etcd session is made at start: restart clb to apply", cfg.File)
	}
	if old.TLS.FlowKey != cfg.TLS.FlowKey {
		return fmt.Errorf("%s: tls.flow_key: changed; the open dialogs' flow tokens would be refused: restart clb to apply", cfg.File)
	}
	if old.Discovery.SIP != cfg.Discovery.SIP || old.Discovery.HTTP != cfg.Discovery.HTTP {
		return fmt.Errorf("%s: discovery.sip, discovery.http: changed; the SRV source is made at start: restart clb to apply", cfg.File)
	}
	if old.HTTP != cfg.HTTP {
		return fmt.Errorf("%s: http: changed; the HTTP front end's limits are set at start: restart clb to apply", cfg.File)
	}
	return nil
}
