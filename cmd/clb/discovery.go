package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"clb/config"
	"clb/membership"
)

// startList is what a node starts with: the file's instances (their host
// names resolved) and those of the SRV names' first look-up, merged as the
// membership merges them (the file first).
type startList struct {
	file, dns, merged []config.Instance
	// lookup is why an SRV look-up gave no answer at start: clb starts
	// without that name's instances if the others make a valid list.
	lookup error
}

// resolveInstances is the list a node of cfg starts with, srv (nil without
// discovery.sip and discovery.http) looked up once, or errors at their
// lines of the file: a host name that does not give one address, or a
// list whose addresses clash once resolved or that serves no listener.
func resolveInstances(cfg *config.Config, srv *membership.SRV) (startList, error) {
	var l startList
	file, err := resolverOf(cfg).Resolve(context.Background(), cfg.Instances)
	if err == nil && srv == nil {
		err = config.ValidateInstances(file, cfg.Listen)
	}
	if err != nil {
		return l, cfg.Locate(err)
	}
	l.file, l.merged = file, file
	if srv == nil {
		return l, nil
	}
	l.dns, l.lookup = srv.Lookup(context.Background())
	l.merged = membership.Merge(file, l.dns)
	if err := config.ValidateInstances(l.merged, cfg.Listen); err != nil {
		err = fmt.Errorf("%s: the instances of the file and of DNS SRV: %w", cfg.File, err)
		return l, errors.Join(l.lookup, err)
	}
	return l, nil
}

func resolverOf(cfg *config.Config) membership.Resolver {
	return membership.Resolver{Lookup: membership.NetLookup(cfg.Discovery.Resolver.AddrPort), Timeout: cfg.Discovery.ResolveTimeout}
}

// srvOptions are the SRV source's options of cfg, without the node's
// hooks (Logger, Failed, Joined).
func srvOptions(cfg *config.Config) membership.SRVOptions {
	d := cfg.Discovery
	var servers []netip.AddrPort
	if d.Resolver.IsValid() {
		servers = []netip.AddrPort{d.Resolver.AddrPort}
	}
	return membership.SRVOptions{SIP: d.SIP, HTTP: d.HTTP, Lookup: membership.DNSClient{Servers: servers},
		Hosts: resolverOf(cfg), Refresh: d.Refresh}
}

// newSRV is cfg's SRV source, nil without discovery.sip and discovery.http.
func newSRV(cfg *config.Config) *membership.SRV {
	if !cfg.Discovery.SRV() {
		return nil
	}
	return membership.NewSRV(srvOptions(cfg))
}

// srvOptions are cfg's SRV options with the node's hooks: logs, the
// failed look-ups counted, and an instance that joins ramped from its
// round's moment (alike on every node).
func (n *node) srvOptions(cfg *config.Config) membership.SRVOptions {
	o := srvOptions(cfg)
	o.Logger = n.log.Named("discovery")
	o.Failed = func(protocol string) { n.metrics.Error(protocol, "discovery") }
	o.Joined = func(name string, at time.Time) {
		if err := n.bal.RampFrom(name, at, time.Now()); err != nil {
			o.Logger.Warn("ramp of an instance from DNS", zap.String("instance", name), zap.Error(err))
		}
	}
	return o
}

// discoveryStatus is the admin status's view of the SRV look-ups; nil
// without discovery.sip and discovery.http.
func (n *node) discoveryStatus() func() []membership.SRVStatus {
	if n.srv == nil {
		return nil
	}
	return n.srv.Status
}
