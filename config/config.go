// Package config owns clb's YAML file: its schema, defaults and validation.
//
// One pipeline: decode (every key checked against the schema, unknown keys
// refused) → defaults → validate → derive. Every error names the file, the line
// and the key path, e.g. "clb.yaml:12: instances[1].weight: must be ...".
//
// Concurrency: a *Config is immutable once Parse returns it; share it freely.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"clb/limits"
	"clb/loadfactor"
)

// Config is one clb.yaml.
type Config struct {
	Listen    Listen     `yaml:"listen"`
	Instances []Instance `yaml:"instances"`
	// Clusters, instead of Instances, groups the instances in clusters
	// (SPEC section 13). Once parsed, Instances holds every cluster's
	// instances too, each with its Cluster set. Default none: Instances is
	// the one cluster DefaultCluster.
	Clusters   []Cluster  `yaml:"clusters"`
	Health     Health     `yaml:"health"`
	LoadFactor LoadFactor `yaml:"loadfactor"`
	Admin      Admin      `yaml:"admin"`
	Keys       Keys       `yaml:"keys"`
	HTTP       HTTP       `yaml:"http"`
	Limits     Limits     `yaml:"limits"`
	Log        Log        `yaml:"log"`
	TLS        TLS        `yaml:"tls"`
	WS         WS         `yaml:"ws"`
	Discovery  Discovery  `yaml:"discovery"`
	// Etcd, if set, is the state all clb nodes share (SPEC section 11).
	Etcd *Etcd `yaml:"etcd"`

	// File is the path the configuration was read from.
	File string `yaml:"-"`
	// lines maps key paths to the lines they are written at, for Locate.
	lines map[string]int
}

// Listen holds clb's own addresses.
type Listen struct {
	// SIP listeners, "udp://host:port", "tcp://host:port",
	// "tls://host:port", "ws://host:port/path" or "wss://host:port/path"
	// (tls and wss need the tls section). Default none.
	SIP []SIPAddr `yaml:"sip"`
	// HTTP is the HTTP front end's host:port. Default none.
	HTTP ListenAddr `yaml:"http"`
	// HTTPS is the HTTPS front end's host:port: HTTP/2 and HTTP/1.1 by
	// ALPN, routed as HTTP is; needs the tls section. Default none.
	HTTPS ListenAddr `yaml:"https"`
	// Admin is the admin API's host:port. Default none.
	Admin ListenAddr `yaml:"admin"`
	// Advertise is the host clb names in its Via and Record-Route instead of
	// a listener's IP address: a name whose records lead to every clb node,
	// so that an in-dialog request can reach any live one (SPEC section 11).
	// Default none: the listener's address.
	Advertise string `yaml:"advertise"`
}

// Instance is one back-end instance as configured.
type Instance struct {
	// Name is unique, [A-Za-z0-9._-]+. Required.
	Name string `yaml:"name"`
	// SIP is where SIP goes; zero if the instance speaks no SIP. The file
	// may name the host; it is resolved before anything routes to it.
	SIP SIPAddr `yaml:"sip"`
	// HTTP is where HTTP goes; zero if the instance speaks no HTTP. The
	// file may name the host, as for SIP.
	HTTP HTTPAddr `yaml:"http"`
	// Weight is the relative share of keys. Default 100; 0 takes no keys.
	Weight int `yaml:"weight"`
	// Cluster is the name of the cluster the instance is in, set from the
	// clusters: section; "" is DefaultCluster.
	Cluster string `yaml:"-"`
}

// DefaultCluster is the cluster of instances given outside a clusters:
// section (the top-level instances:, other sources).
const DefaultCluster = "default"

// ClusterName is the name of the instance's cluster.
func (i *Instance) ClusterName() string {
	if i.Cluster == "" {
		return DefaultCluster
	}
	return i.Cluster
}

// Cluster is a group of instances that replicate sessions among themselves
// (SPEC section 13): a session stays in its cluster, and fails over only
// within it.
type Cluster struct {
	// Name is unique among clusters, [A-Za-z0-9._-]+. Required.
	Name string `yaml:"name"`
	// Weight is the cluster's relative share of new sessions. Default 100;
	// 0 closes it to new sessions (its sessions stay).
	Weight int `yaml:"weight"`
	// Instances are the cluster's; names are unique across clusters.
	Instances []Instance `yaml:"instances"`
}

// ClusterWeights is every cluster's weight by name: the clusters: section's,
// or DefaultCluster's 100 without one.
func (c *Config) ClusterWeights() map[string]int {
	if len(c.Clusters) == 0 {
		return map[string]int{DefaultCluster: DefaultWeight}
	}
	w := make(map[string]int, len(c.Clusters))
	for _, cl := range c.Clusters {
		w[cl.Name] = cl.Weight
	}
	return w
}

// Health configures the health checks.
type Health struct {
	// Active turns probes on. Default true.
	Active bool `yaml:"active"`
	// Interval between probes. Default 2s.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one probe. Default 1s.
	Timeout time.Duration `yaml:"timeout"`
	// Rise is how many passed probes in a row mark an instance up. Default 2.
	Rise int `yaml:"rise"`
	// Fall is how many failures in a row mark an instance down. Default 3.
	Fall int `yaml:"fall"`
	// HTTPPath is the GET target of the HTTP probe. Default "/".
	HTTPPath string `yaml:"http_path"`
}

// LoadFactor configures the ramp of SPEC section 3.
type LoadFactor struct {
	// Start is the factor an instance returns at. Default 0.1.
	Start float64 `yaml:"start"`
	// Increase is added every Period. Default 0.1.
	Increase float64 `yaml:"increase"`
	// Period between increases. Default 10s.
	Period time.Duration `yaml:"period"`
}

// Params is the ramp as package loadfactor takes it.
func (l LoadFactor) Params() loadfactor.Params {
	return loadfactor.Params{Start: l.Start, Increase: l.Increase, Period: l.Period}
}

// HTTP configures the HTTP front end's limits and timeouts.
type HTTP struct {
	// ReadHeaderTimeout bounds receiving a request head. Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes a client connection idle between requests. Default 60s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// WriteTimeout bounds each write to a client. Default 30s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// DialTimeout bounds opening a connection to an instance. Default 2s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ResponseTimeout bounds waiting for an instance's response head (504
	// after it). Default 30s.
	ResponseTimeout time.Duration `yaml:"response_timeout"`
	// UpstreamIdleTimeout closes an idle connection to an instance. Default 30s.
	UpstreamIdleTimeout time.Duration `yaml:"upstream_idle_timeout"`
	// MaxIdlePerInstance bounds the idle connections kept to each instance.
	// Default 64.
	MaxIdlePerInstance int `yaml:"max_idle_per_instance"`
	// MaxConnections bounds the client connections open at once; at the
	// bound clb stops accepting and new ones wait in the listen backlog, as
	// with HAProxy's maxconn. Default 10000.
	MaxConnections int `yaml:"max_connections"`
	// MaxHeaderBytes bounds a request head. Default 32768.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxHeaders bounds the header fields of a request. Default 100.
	MaxHeaders int `yaml:"max_headers"`
	// Grace is how long requests in flight may finish on shutdown. Default 10s.
	Grace time.Duration `yaml:"grace"`
}

// Limits is flood control (SPEC section 12): per source address, each off
// at its default rate 0.
type Limits struct {
	SIP  SIPLimits  `yaml:"sip"`
	HTTP HTTPLimits `yaml:"http"`
	// Exempt sources (CIDRs or addresses) are never limited: trunks, other
	// clb nodes. Default none.
	Exempt []Prefix `yaml:"exempt"`
	// MaxSources bounds each protocol's table of sources; the least
	// recently seen is forgotten first. Default 65536.
	MaxSources int `yaml:"max_sources"`
}

// SIPLimits limits SIP requests per source.
type SIPLimits struct {
	// Rate is requests per second per source; 0 is off. Default 0.
	Rate float64 `yaml:"rate"`
	// Burst is the requests a source may send at once. Default the rate.
	Burst float64 `yaml:"burst"`
	// DropScanners drops, unanswered, requests whose User-Agent is a known
	// SIP scanner's (friendly-scanner, sipvicious, sipcli, ...). Default
	// false.
	DropScanners bool `yaml:"drop_scanners"`
}

// HTTPLimits limits HTTP requests and connections per source.
type HTTPLimits struct {
	// Rate is requests per second per source; 0 is off. Default 0.
	Rate float64 `yaml:"rate"`
	// Burst is the requests a source may send at once. Default the rate.
	Burst float64 `yaml:"burst"`
	// Connections bounds a source's open connections; 0 is off. Default 0.
	Connections int `yaml:"connections"`
}

// Prefix is a CIDR, or one address (a prefix of its full length).
type Prefix struct{ netip.Prefix }

// UnmarshalYAML parses "10.0.0.0/8" or "192.0.2.7".
func (p *Prefix) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a CIDR such as 10.0.0.0/8")
	}
	if pf, err := netip.ParsePrefix(n.Value); err == nil {
		p.Prefix = pf.Masked()
		return nil
	}
	a, err := netip.ParseAddr(n.Value)
	if err != nil {
		return fmt.Errorf("%q: want a CIDR such as 10.0.0.0/8 or an address", n.Value)
	}
	p.Prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	return nil
}

// Log configures what clb logs beyond its own events.
type Log struct {
	// Access writes a line per HTTP request and per SIP request forwarded
	// or answered by clb, under the logger "access". Default false.
	Access bool `yaml:"access"`
	// AccessSample is the share of keys whose requests are logged, in
	// (0, 1]: a session is logged whole or not at all. Default 1.
	AccessSample float64 `yaml:"access_sample"`
}

// validate checks the log section (called from the decoder's validate).
func (d *decoder) validateLog(l *Log) {
	if !(l.AccessSample > 0 && l.AccessSample <= 1) {
		d.errorf(d.line("log.access_sample"), "log.access_sample", "%v: must be greater than 0 and at most 1", l.AccessSample)
	}
}

// Discovery configures DNS: the look-ups of host names in instances'
// addresses, and the instances SRV records give (SPEC section 11).
type Discovery struct {
	// SIP is the SRV name whose targets are instances' SIP addresses:
	// _sip._udp.DOMAIN, _sip._tcp.DOMAIN or _sips._tcp.DOMAIN (RFC 3263),
	// the transport the service label says. Default "": none.
	SIP string `yaml:"sip"`
	// HTTP is the SRV name whose targets are instances' HTTP addresses:
	// _http._tcp.DOMAIN or _https._tcp.DOMAIN. Default "": none.
	HTTP string `yaml:"http"`
	// Refresh is the longest time between two look-ups of the SRV names;
	// an answer whose TTL is shorter brings the next one forward (to 1 s at
	// the least). Default 10s.
	Refresh time.Duration `yaml:"refresh"`
	// Resolver is the DNS server asked, IP:port (port 53 if omitted).
	// Default "": the system's (/etc/resolv.conf). /etc/hosts is read first
	// either way, as the system does, for host names (not for SRV names).
	Resolver DNSServer `yaml:"resolver"`
	// ResolveInterval is how often the host names are looked up again; an
	// address that changed is picked up without a reload. Default 30s.
	ResolveInterval time.Duration `yaml:"resolve_interval"`
	// ResolveTimeout bounds one look-up. Default 2s.
	ResolveTimeout time.Duration `yaml:"resolve_timeout"`
}

// SRV reports whether instances come from DNS SRV records.
func (s Discovery) SRV() bool { return s.SIP != "" || s.HTTP != "" }

// SRVTransport is the transport an SRV name's service label says
// (_sip._udp udp, _sip._tcp tcp, _sips._tcp tls, _http._tcp http,
// _https._tcp https) and the domain after it; "" for another label.
func SRVTransport(name string) (transport, domain string) {
	labels := strings.SplitN(strings.ToLower(name), ".", 3)
	if len(labels) < 3 {
		return "", ""
	}
	transport = map[string]string{"_sip._udp": "udp", "_sip._tcp": "tcp", "_sips._tcp": "tls",
		"_http._tcp": "http", "_https._tcp": "https"}[labels[0]+"."+labels[1]]
	return transport, strings.TrimSuffix(labels[2], ".")
}

// DNSServer is a DNS server's address; zero for the system's.
type DNSServer struct{ netip.AddrPort }

// UnmarshalYAML parses "IP:port" or "IP" (port 53); "" is the system's.
func (s *DNSServer) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want IP:port of a DNS server")
	}
	if n.Value == "" {
		s.AddrPort = netip.AddrPort{}
		return nil
	}
	if ap, err := netip.ParseAddrPort(n.Value); err == nil && ap.Port() != 0 {
		s.AddrPort = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		return nil
	}
	a, err := netip.ParseAddr(n.Value)
	if err != nil {
		return fmt.Errorf("%q: want IP:port of a DNS server (a name would need a DNS server to find it)", n.Value)
	}
	s.AddrPort = netip.AddrPortFrom(a.Unmap(), 53)
	return nil
}

// validateDiscovery checks the discovery section (called from validate).
func (d *decoder) validateDiscovery(c *Config) {
	s := &c.Discovery
	if s.ResolveInterval <= 0 {
		d.errorf(d.line("discovery.resolve_interval"), "discovery.resolve_interval", "must be greater than 0")
	}
	if s.ResolveTimeout <= 0 {
		d.errorf(d.line("discovery.resolve_timeout"), "discovery.resolve_timeout", "must be greater than 0")
	} else if s.ResolveTimeout > s.ResolveInterval && s.ResolveInterval > 0 {
		d.errorf(d.line("discovery.resolve_timeout"), "discovery.resolve_timeout",
			"%v is longer than discovery.resolve_interval %v", s.ResolveTimeout, s.ResolveInterval)
	}
	if s.Refresh <= 0 {
		d.errorf(d.line("discovery.refresh"), "discovery.refresh", "must be greater than 0")
	} else if s.SRV() && s.ResolveTimeout > s.Refresh {
		d.errorf(d.line("discovery.resolve_timeout"), "discovery.resolve_timeout",
			"%v is longer than discovery.refresh %v", s.ResolveTimeout, s.Refresh)
	}
	for _, n := range []struct {
		name, key, want string
		transports      []string
	}{
		{s.SIP, "discovery.sip", "_sip._udp.DOMAIN, _sip._tcp.DOMAIN or _sips._tcp.DOMAIN", []string{"udp", "tcp", "tls"}},
		{s.HTTP, "discovery.http", "_http._tcp.DOMAIN or _https._tcp.DOMAIN", []string{"http", "https"}},
	} {
		if n.name == "" {
			continue
		}
		transport, domain := SRVTransport(n.name)
		switch {
		case !slices.Contains(n.transports, transport):
			d.errorf(d.line(n.key), n.key, "%q: want an SRV name %s", n.name, n.want)
		case checkHost(domain) != nil:
			d.errorf(d.line(n.key), n.key, "%q: %q is not a domain name", n.name, domain)
		case n.key == "discovery.sip" && len(c.Listen.SIP) > 0 && !hasTransport(c.Listen.SIP, transport):
			d.errorf(d.line(n.key), n.key, "%s: listen.sip has no %s listener to reach its instances from", n.name, transport)
		}
	}
}

// Admin configures the admin API.
type Admin struct {
	// Token is the bearer token the admin API requires; it must be set when
	// listen.admin is not a loopback address. Default "".
	Token string `yaml:"token"`
}

// Keys holds the key rules of both front ends.
type Keys struct {
	// SIP rules, tried in order; default from-tag + call-id.
	SIP []Rule `yaml:"sip"`
	// HTTP rules, tried in order; default the CLBKEY cookie.
	HTTP []Rule `yaml:"http"`
}

// Rule takes a key from one source of a request; the first rule that gives a
// non-empty value wins. Exactly one source is set.
type Rule struct {
	// Header takes this header's value (SIP or HTTP).
	Header string `yaml:"header"`
	// Cookie takes this cookie's value (HTTP).
	Cookie string `yaml:"cookie"`
	// Query takes this query parameter (HTTP).
	Query string `yaml:"query"`
	// RequestURI takes the Request-URI (SIP) or the URL path (HTTP).
	RequestURI bool `yaml:"request_uri"`
	// URIUser narrows the source to the user part of the URI it holds.
	URIUser bool `yaml:"uri_user"`
	// URIParam narrows the source to this parameter of the URI it holds
	// (of an HTTP path: a path parameter such as ;jsessionid=).
	URIParam string `yaml:"uri_param"`
	// Regexp, if set, narrows the value to the first capture group of this
	// regular expression (RE2 syntax); no match gives no key.
	Regexp Pattern `yaml:"regexp"`
	// Prefix is put in front of a non-empty result.
	Prefix string `yaml:"prefix"`
	// When, if set, limits the rule to the requests it holds for.
	When *Condition `yaml:"when"`
}

// Condition is a rule's when: one source of the request and one test of it
// (the seeds' data-centric rules' if). Exactly one source and one test are
// set.
type Condition struct {
	// Header tests this header's value.
	Header string `yaml:"header"`
	// Cookie tests this cookie's value (HTTP).
	Cookie string `yaml:"cookie"`
	// Query tests this query parameter (HTTP).
	Query string `yaml:"query"`
	// RequestURI tests the Request-URI (SIP) or the target's path (HTTP).
	RequestURI bool `yaml:"request_uri"`
	// Method tests the request's method.
	Method bool `yaml:"method"`

	// Exists: the source is present (true) or absent (false).
	Exists *bool `yaml:"exists"`
	// Equals: the source's value is exactly this text.
	Equals *string `yaml:"equals"`
	// Matches: the source's value matches this RE2 expression (unanchored,
	// as RE2 is: anchor it with ^ and $ to test the whole value).
	Matches Regexp `yaml:"matches"`
}

// Finish turns the value a rule's source gave into the key: the first
// capture group of Regexp, if set, then Prefix in front. An empty value, or
// one the expression does not match, gives no key ("").
func (r *Rule) Finish(value string) string {
	if value == "" {
		return ""
	}
	if r.Regexp.Regexp != nil {
		m := r.Regexp.FindStringSubmatch(value)
		if len(m) < 2 || m[1] == "" {
			return ""
		}
		value = m[1]
	}
	return r.Prefix + value
}

// Pattern is a compiled regular expression with at least one capture group.
type Pattern struct{ *regexp.Regexp }

// UnmarshalYAML compiles the expression and checks it has a group.
func (p *Pattern) UnmarshalYAML(n *yaml.Node) error {
	var re Regexp
	if err := re.UnmarshalYAML(n); err != nil {
		return err
	}
	if re.NumSubexp() < 1 {
		return fmt.Errorf("%q has no capture group; the key is the first group", n.Value)
	}
	p.Regexp = re.Regexp
	return nil
}

// Regexp is a compiled RE2 expression.
type Regexp struct{ *regexp.Regexp }

// UnmarshalYAML compiles the expression.
func (p *Regexp) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a regular expression")
	}
	re, err := regexp.Compile(n.Value)
	if err != nil {
		return err
	}
	p.Regexp = re
	return nil
}

// Defaults is the configuration before the file is read.
func Defaults() Config {
	lf := loadfactor.DefaultParams()
	return Config{
		Health: Health{
			Active:   true,
			Interval: 2 * time.Second,
			Timeout:  time.Second,
			Rise:     2,
			Fall:     3,
			HTTPPath: "/",
		},
		Limits:     Limits{MaxSources: 65_536},
		LoadFactor: LoadFactor{Start: lf.Start, Increase: lf.Increase, Period: lf.Period},
		HTTP: HTTP{
			ReadHeaderTimeout:   10 * time.Second,
			IdleTimeout:         60 * time.Second,
			WriteTimeout:        30 * time.Second,
			DialTimeout:         2 * time.Second,
			ResponseTimeout:     30 * time.Second,
			UpstreamIdleTimeout: 30 * time.Second,
			MaxIdlePerInstance:  64,
			MaxConnections:      10_000,
			MaxHeaderBytes:      32 << 10,
			MaxHeaders:          100,
			Grace:               10 * time.Second,
		},
		Log:       Log{AccessSample: 1},
		TLS:       TLS{MinVersion: "1.2"},
		WS:        DefaultWS(),
		Discovery: Discovery{Refresh: 10 * time.Second, ResolveInterval: 30 * time.Second, ResolveTimeout: 2 * time.Second},
	}
}

// DefaultWeight is an instance's weight when the file gives none.
const DefaultWeight = 100

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse decodes, defaults and validates data, read from file. The error, if
// any, joins one *Error per problem found.
func Parse(file string, data []byte) (*Config, error) {
	d := &decoder{file: file, lines: map[string]int{}}
	cfg := Defaults()
	cfg.File = file
	d.document(data, &cfg)
	d.validating = true
	d.validate(&cfg)
	if err := d.err(); err != nil {
		return nil, err
	}
	cfg.lines = d.lines
	return &cfg, nil
}

// Locate places the *InstanceError values err is (joined or alone, as
// ValidateInstances and the look-ups of host names give them) at their
// lines in the file, as *Error values the way Parse reports; other errors,
// wrapped ones included, stay as they are.
func (c *Config) Locate(err error) error {
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	out := make([]error, 0, len(errs))
	for _, e := range errs {
		ie, ok := e.(*InstanceError)
		if !ok {
			out = append(out, e) // wrapped: its own words say where it comes from
			continue
		}
		d := decoder{lines: c.lines}
		out = append(out, &Error{File: c.File, Line: d.line(ie.Key), Key: ie.Key, Msg: ie.Msg})
	}
	return errors.Join(out...)
}

// SIPConfig is the SIP flood control as package limits takes it.
func (l Limits) SIPConfig() limits.Config {
	return limits.Config{Rate: l.SIP.Rate, Burst: l.SIP.Burst, Exempt: l.exempt(), MaxSources: l.MaxSources}
}

// HTTPConfig is the HTTP request limit as package limits takes it.
func (l Limits) HTTPConfig() limits.Config {
	return limits.Config{Rate: l.HTTP.Rate, Burst: l.HTTP.Burst, Exempt: l.exempt(), MaxSources: l.MaxSources}
}

func (l Limits) exempt() []netip.Prefix {
	out := make([]netip.Prefix, len(l.Exempt))
	for i, p := range l.Exempt {
		out[i] = p.Prefix
	}
	return out
}
