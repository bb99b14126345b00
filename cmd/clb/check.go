package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"clb/balancer"
	"clb/certs"
	"clb/config"
	"clb/membership"
)

// check validates the file and prints what clb would run with.
func check(args []string, stdout, stderr io.Writer) int {
	cfg, rest, exit := loadConfig("check", args, stderr, nil)
	if cfg == nil {
		return exit
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "clb check: unexpected arguments %q\n", rest)
		return 2
	}
	srv := newSRV(cfg)
	start, err := resolveInstances(cfg, srv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintf(stderr, "clb check: %s is not valid\n", cfg.File)
		return 1
	}
	if start.lookup != nil { // clb run would start, without those instances
		fmt.Fprintf(stderr, "clb check: warning: %v\n", start.lookup)
	}
	b, err := newBalancer(cfg, start.merged)
	if err != nil {
		fmt.Fprintf(stderr, "clb check: %s: %v\n", cfg.File, err)
		return 1
	}
	printSummary(stdout, cfg, b.Table().Status(time.Now()))
	if srv != nil {
		_ = printDiscovery(stdout, srv.Status())
	}
	if len(cfg.Clusters) > 0 {
		printClusters(stdout, b.Table().Clusters())
	}
	return 0
}

// newBalancer is the balancer of instances (cfg's, their host names
// resolved where addresses matter) in cfg's clusters, every instance up.
func newBalancer(cfg *config.Config, instances []config.Instance) (*balancer.Balancer, error) {
	return balancer.NewClusters(instances, cfg.ClusterWeights(), cfg.LoadFactor.Params())
}

// printClusters lists the clusters of a clusters: section.
func printClusters(out io.Writer, clusters []balancer.ClusterStatus) {
	fmt.Fprintf(out, "clusters: %d\n", len(clusters))
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  CLUSTER\tWEIGHT\tNEW SESSIONS\tINSTANCES")
	for _, c := range clusters {
		fmt.Fprintf(w, "  %s\t%d\t%.1f%%\t%s\n", c.Name, c.Weight, 100*c.Share, strings.Join(c.Instances, " "))
	}
	w.Flush()
}

func printSummary(out io.Writer, cfg *config.Config, status []balancer.InstanceStatus) {
	fmt.Fprintf(out, "%s: OK\n", cfg.File)

	var sip []string
	for _, a := range cfg.Listen.SIP {
		sip = append(sip, a.String())
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "listen:")
	fmt.Fprintf(w, "  sip\t%s\n", orNone(strings.Join(sip, ", ")))
	fmt.Fprintf(w, "  http\t%s\n", orNone(addr(cfg.Listen.HTTP.Endpoint)))
	fmt.Fprintf(w, "  https\t%s\n", orNone(addr(cfg.Listen.HTTPS.Endpoint)))
	fmt.Fprintf(w, "  admin\t%s\n", orNone(addr(cfg.Listen.Admin.Endpoint)))
	w.Flush()

	total := 0
	for _, s := range status {
		total += s.Instance.Weight
	}
	fromDNS := ""
	if n := len(status) - len(cfg.Instances); cfg.Discovery.SRV() {
		fromDNS = fmt.Sprintf(" (%d from DNS SRV)", n)
	}
	fmt.Fprintf(out, "instances: %d%s, total weight %d\n", len(status), fromDNS, total)
	configured := map[string]config.Instance{}
	for _, inst := range cfg.Instances {
		configured[inst.Name] = inst
	}
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  NAME\tWEIGHT\tSHARE\tSIP\tHTTP")
	for _, s := range status {
		inst, conf := s.Instance, configured[s.Instance.Name]
		if _, ok := configured[s.Instance.Name]; !ok { // from DNS: as its records give it
			conf = *inst
		}
		fmt.Fprintf(w, "  %s\t%d\t%.1f%%\t%s\t%s\n", inst.Name, inst.Weight, 100*s.Share,
			resolvedAs(conf.SIP.Endpoint, inst.SIP.Endpoint), resolvedAs(conf.HTTP.Endpoint, inst.HTTP.Endpoint))
	}
	w.Flush()
	d := cfg.Discovery
	resolver := "the system's"
	if d.Resolver.IsValid() {
		resolver = d.Resolver.String()
	}
	fmt.Fprintf(out, "host names: resolved by %s, again every %v (timeout %v)\n", resolver, d.ResolveInterval, d.ResolveTimeout)

	h := cfg.Health
	probes := "off (passive checks only)"
	if h.Active {
		probes = fmt.Sprintf("every %v, timeout %v, HTTP GET %s", h.Interval, h.Timeout, h.HTTPPath)
	}
	fmt.Fprintf(out, "health: probes %s; up after %d passes, down after %d failures\n", probes, h.Rise, h.Fall)
	lf := cfg.LoadFactor
	fmt.Fprintf(out, "loadfactor: start %v, +%v every %v: full load %v after an instance returns\n",
		lf.Start, lf.Increase, lf.Period, time.Duration(lf.Params().Steps())*lf.Period)
	fmt.Fprintf(out, "keys: sip %s; http %s\n",
		rules(len(cfg.Keys.SIP), "from-tag + call-id"), rules(len(cfg.Keys.HTTP), "the CLBKEY cookie"))
	token := "none"
	if cfg.Admin.Token != "" {
		token = "set"
	}
	fmt.Fprintf(out, "admin token: %s\n", token)
	printTLS(out, cfg)
	printWS(out, cfg)
}

// printWS says how the ws:// and wss:// listeners, if any, take clients.
func printWS(out io.Writer, cfg *config.Config) {
	any := false
	for _, a := range cfg.Listen.SIP {
		any = any || a.IsWebSocket()
	}
	if !any {
		return
	}
	w := cfg.WS
	origins := "any"
	if len(w.Origins) > 0 {
		origins = strings.Join(w.Origins, ", ")
	}
	pings := "no pings"
	if w.PingInterval > 0 {
		pings = fmt.Sprintf("ping after %v of silence", w.PingInterval)
	}
	key := "random at start (flow tokens die with the process; set tls.flow_key to share it between nodes)"
	if cfg.TLS.FlowKey != "" {
		key = "tls.flow_key"
	}
	fmt.Fprintf(out, "ws: subprotocol sip; origins %s; at most %d connections per transport; %s, closed after %v idle; messages up to %d bytes; flow key %s\n",
		origins, w.MaxConnections, pings, w.IdleTimeout, w.MaxMessage, key)
}

// printDiscovery says what each SRV name's last look-up gave (clb check,
// clb ctl status).
func printDiscovery(out io.Writer, status []membership.SRVStatus) error {
	for _, st := range status {
		result := fmt.Sprintf("%d instances", st.Instances)
		switch {
		case !st.OK && st.Answered.IsZero():
			result = "no answer: " + st.Error
		case !st.OK:
			result = fmt.Sprintf("no answer: %s (routing on its answer of %s: %d instances)",
				st.Error, st.Answered.UTC().Format(time.RFC3339), st.Instances)
		}
		if st.Refused != "" {
			result += "; its last change refused: " + st.Refused
		}
		if _, err := fmt.Fprintf(out, "discovery: %s %s: %s\n", st.Protocol, st.Name, result); err != nil {
			return err
		}
	}
	return nil
}

// printTLS says what the tls section holds; Load has checked the files.
func printTLS(out io.Writer, cfg *config.Config) {
	t := cfg.TLS
	if !t.Set() && t.InstanceCA == "" {
		return
	}
	m, err := certs.Load(t.Files(), time.Now())
	if err != nil { // changed since Load read it
		fmt.Fprintf(out, "tls: %v\n", err)
		return
	}
	instances := "system roots"
	if t.InstanceCA != "" {
		instances = t.InstanceCA
	}
	if leaf := m.Leaf(); leaf != nil {
		clients := "not asked for"
		if m.ClientAuth() {
			clients = "required, signed by " + t.ClientCA
		}
		fmt.Fprintf(out, "tls: certificate %q, expires %s (in %s); TLS %s minimum; client certificates %s; instances verified against %s\n",
			leaf.Subject.String(), leaf.NotAfter.UTC().Format(time.RFC3339), time.Until(leaf.NotAfter).Round(time.Hour), t.MinVersion, clients, instances)
		return
	}
	fmt.Fprintf(out, "tls: no certificate; instances verified against %s\n", instances)
}

// resolvedAs is an instance's address as configured and, when it names its
// host, the address the name resolved to.
func resolvedAs(configured, resolved config.Endpoint) string {
	if configured.Host == resolved.Host {
		return orNone(configured.String())
	}
	return fmt.Sprintf("%s (%s)", configured, resolved.Addr())
}

func addr(e config.Endpoint) string {
	if e.IsZero() {
		return ""
	}
	return e.Addr()
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func rules(n int, fallback string) string {
	switch n {
	case 0:
		return fallback
	case 1:
		return "1 rule, then " + fallback
	}
	return fmt.Sprintf("%d rules, then %s", n, fallback)
}
