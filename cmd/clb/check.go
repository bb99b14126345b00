package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"clb/balancer"
	"clb/config"
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
	b, err := newBalancer(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "clb check: %s: %v\n", cfg.File, err)
		return 1
	}
	printSummary(stdout, cfg, b.Table().Status(time.Now()))
	if len(cfg.Clusters) > 0 {
		printClusters(stdout, b.Table().Clusters())
	}
	return 0
}

// newBalancer is the balancer of cfg's instances and clusters, every
// instance up.
func newBalancer(cfg *config.Config) (*balancer.Balancer, error) {
	return balancer.NewClusters(cfg.Instances, cfg.ClusterWeights(), cfg.LoadFactor.Params())
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
	fmt.Fprintf(w, "  admin\t%s\n", orNone(addr(cfg.Listen.Admin.Endpoint)))
	w.Flush()

	total := 0
	for _, inst := range cfg.Instances {
		total += inst.Weight
	}
	fmt.Fprintf(out, "instances: %d, total weight %d\n", len(cfg.Instances), total)
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  NAME\tWEIGHT\tSHARE\tSIP\tHTTP")
	for _, s := range status {
		inst := s.Instance
		fmt.Fprintf(w, "  %s\t%d\t%.1f%%\t%s\t%s\n", inst.Name, inst.Weight, 100*s.Share,
			orNone(inst.SIP.String()), orNone(inst.HTTP.String()))
	}
	w.Flush()

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
