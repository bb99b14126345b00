package config

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"clb/hashing"
	"clb/loadfactor"
)

// MaxWeight bounds an instance's weight.
const MaxWeight = 1_000_000

// validate checks what decoding cannot: ranges, references and conflicts.
func (d *decoder) validate(c *Config) {
	d.validateListen(c)
	d.validateInstances(c)
	d.validateHealth(&c.Health)
	d.validateHTTP(&c.HTTP)
	d.validateLimits(&c.Limits)
	d.validateLog(&c.Log)
	d.validateTLS(c)
	d.validateWS(c)
	d.validateDiscovery(c)
	d.validateEtcd(c.Etcd)
	var perr *loadfactor.ParamError
	if errors.As(c.LoadFactor.Params().Validate(), &perr) {
		key := "loadfactor." + perr.Field
		d.errorf(d.line(key), key, "%s", perr.Msg)
	}
	for i, r := range c.Keys.SIP {
		d.validateRule(r, fmt.Sprintf("keys.sip[%d]", i), true)
	}
	for i, r := range c.Keys.HTTP {
		d.validateRule(r, fmt.Sprintf("keys.http[%d]", i), false)
	}
}

func (d *decoder) validateListen(c *Config) {
	if a := c.Listen.Advertise; a != "" {
		if err := checkHost(a); err != nil {
			d.errorf(d.line("listen.advertise"), "listen.advertise", "%v", err)
		}
	}
	l := &c.Listen
	if len(l.SIP) == 0 && l.HTTP.IsZero() && l.HTTPS.IsZero() {
		d.errorf(d.line("listen"), "listen", "set listen.sip, listen.http or both (or listen.https)")
	}
	// Two listeners on one transport address cannot both bind.
	bound := map[string]string{}
	claim := func(e Endpoint, key string) {
		if e.Port == 0 {
			return
		}
		transport := e.Transport
		if transport != "udp" {
			transport = "tcp"
		}
		id := transport + " " + e.Addr()
		if first, dup := bound[id]; dup {
			d.errorf(d.line(key), key, "%s %s is also %s", transport, e.Addr(), first)
			return
		}
		bound[id] = key
	}
	for i, a := range l.SIP {
		key := fmt.Sprintf("listen.sip[%d]", i)
		claim(a.Endpoint, key)
		// clb names this address in its Via and Record-Route.
		if ip, err := netip.ParseAddr(a.Host); err != nil || ip.IsUnspecified() {
			d.errorf(d.line(key), key, "%s: give the IP address clients and instances reach clb at (not a name, not 0.0.0.0 or ::)", a)
		}
	}
	if !l.HTTP.IsZero() {
		claim(l.HTTP.Endpoint, "listen.http")
	}
	if !l.HTTPS.IsZero() {
		claim(l.HTTPS.Endpoint, "listen.https")
	}
	if !l.Admin.IsZero() {
		claim(l.Admin.Endpoint, "listen.admin")
		if !l.Admin.IsLoopback() && c.Admin.Token == "" {
			d.errorf(d.line("listen.admin"), "listen.admin",
				"%s is not a loopback address: set admin.token", l.Admin.Addr())
		}
	}
}

func (d *decoder) validateInstances(c *Config) {
	paths := d.flattenClusters(c)
	list := "instances"
	if paths != nil {
		list = "clusters"
	}
	checkInstances(c.Instances, c.Listen, true, c.Discovery.SRV(),
		func(i int, key, msg string) {
			// An instance of a cluster is named by its place in the file.
			if paths != nil {
				if prefix := fmt.Sprintf("instances[%d]", i); i >= 0 && strings.HasPrefix(key, prefix) {
					key = paths[i] + key[len(prefix):]
				} else if key == "instances" {
					key = list
				}
				msg = flatKey.ReplaceAllStringFunc(msg, func(k string) string {
					n, _ := strconv.Atoi(k[len("instances[") : len(k)-1])
					return paths[n]
				})
			}
			d.errorf(d.line(key), key, "%s", msg)
		},
		func() bool { return d.reported(list) })
}

// flatKey is an instance's key path in the flattened list, as a message of
// checkInstances names another instance.
var flatKey = regexp.MustCompile(`\binstances\[\d+\]`)

// flattenClusters checks the clusters: section and appends every cluster's
// instances to c.Instances, each with its Cluster set; it returns the key
// path of each (nil without clusters:).
func (d *decoder) flattenClusters(c *Config) []string {
	if len(c.Clusters) == 0 {
		return nil
	}
	if len(c.Instances) > 0 {
		d.errorf(d.line("clusters"), "clusters", "give instances: or clusters:, not both (instances: is the one cluster %q)", DefaultCluster)
		return nil
	}
	if len(c.Clusters) > hashing.MaxChoices {
		d.errorf(d.line("clusters"), "clusters", "%d clusters, at most %d", len(c.Clusters), hashing.MaxChoices)
	}
	paths := []string{}
	names := map[string]string{}
	open := false
	for i, cl := range c.Clusters {
		key := fmt.Sprintf("clusters[%d]", i)
		switch {
		case cl.Name == "":
			d.errorf(d.line(key+".name"), key+".name", "required")
		case !validName(cl.Name):
			d.errorf(d.line(key+".name"), key+".name", "%q: use only letters, digits, '.', '_' and '-'", cl.Name)
		default:
			if first, dup := names[cl.Name]; dup {
				d.errorf(d.line(key+".name"), key+".name", "duplicate name %q (also %s)", cl.Name, first)
			}
			names[cl.Name] = key
		}
		if cl.Weight < 0 || cl.Weight > MaxWeight {
			d.errorf(d.line(key+".weight"), key+".weight", "%d: must be from 0 to %d", cl.Weight, MaxWeight)
		}
		weighted := false
		for j, inst := range cl.Instances {
			inst.Cluster = cl.Name
			c.Instances = append(c.Instances, inst)
			paths = append(paths, fmt.Sprintf("%s.instances[%d]", key, j))
			weighted = weighted || inst.Weight > 0
		}
		open = open || cl.Weight > 0 && weighted
	}
	if !open && len(paths) > 0 && !d.reported("clusters") {
		d.errorf(d.line("clusters"), "clusters", "no cluster of weight > 0 has an instance of weight > 0, so no new session could start")
	}
	return paths
}

// InstanceError is a problem ValidateInstances found in one instance, or in
// the list as a whole.
type InstanceError struct {
	// Key is the key path the file would have: "instances[1].weight",
	// "instances[1]" (the instance as a whole) or "instances" (the list).
	Key string
	// Name is the instance's name; empty for the list or a nameless instance.
	Name string
	Msg  string
}

func (e *InstanceError) Error() string {
	if e.Name == "" {
		return e.Key + ": " + e.Msg
	}
	return fmt.Sprintf("instance %q: %s: %s", e.Name, e.Key, e.Msg)
}

// ValidateInstances checks an instance list wherever it comes from (the
// file, DNS SRV, etcd) as Load checks the file's, against the listeners it is
// reached from: the errors, each an *InstanceError, are Load's without the
// file and line, and as there, a problem of a key hides the others of that
// key. One more: every address must be an IP address, as the list is what
// requests are sent by, and the request path never resolves a name (the
// file's host names are resolved before the list is made).
func ValidateInstances(instances []Instance, listen Listen) error {
	var errs []error
	var keys []string
	report := func(i int, key, msg string) {
		for _, k := range keys {
			if related(k, key) {
				return
			}
		}
		keys = append(keys, key)
		e := &InstanceError{Key: key, Msg: msg}
		if i >= 0 {
			e.Name = instances[i].Name
		}
		errs = append(errs, e)
	}
	checkInstances(instances, listen, false, false, report, func() bool { return len(errs) > 0 })
	return errors.Join(errs...)
}

// checkInstances is the one check of an instance list, for Load and
// ValidateInstances: hostNames allows addresses to name their host (the
// file's, resolved later); report hears each problem with its instance's
// index (-1 for the list), key path and message; reported tells whether any
// problem of the list is known, after which what the instances offer is not
// judged; others says that other sources (DNS SRV) give instances too, so
// that the list may be empty, and what it offers is judged once merged.
func checkInstances(instances []Instance, listen Listen, hostNames, others bool, report func(i int, key, msg string), reported func() bool) {
	bad := func(i int, key, format string, args ...any) { report(i, key, fmt.Sprintf(format, args...)) }
	if len(instances) == 0 && others {
		return
	}
	if len(instances) == 0 {
		bad(-1, "instances", "at least one instance is required")
		return
	}
	if len(instances) > hashing.MaxInstances {
		bad(-1, "instances", "%d instances, at most %d", len(instances), hashing.MaxInstances)
	}
	names := map[string]string{}
	addrs := map[string]string{}
	weighted, sip, http := 0, 0, 0
	for i, inst := range instances {
		key := fmt.Sprintf("instances[%d]", i)
		switch {
		case inst.Name == "":
			bad(i, key+".name", "required")
		case !validName(inst.Name):
			bad(i, key+".name", "%q: use only letters, digits, '.', '_' and '-'", inst.Name)
		default:
			if first, dup := names[inst.Name]; dup {
				bad(i, key+".name", "duplicate name %q (also %s)", inst.Name, first)
			}
			names[inst.Name] = key
		}
		if inst.SIP.IsZero() && inst.HTTP.IsZero() {
			bad(i, key, "give a sip address, an http address or both")
		}
		if e := inst.SIP.Endpoint; e.IsWebSocket() {
			bad(i, key+".sip", "%s: an instance speaks udp, tcp or tls (WebSocket is for clients)", e)
		} else if !e.IsZero() && !hasTransport(listen.SIP, e.Transport) && len(listen.SIP) > 0 {
			bad(i, key+".sip", "%s: listen.sip has no %s listener to reach it from", e, e.Transport)
		}
		for _, a := range []struct {
			e   Endpoint
			key string
		}{{inst.SIP.Endpoint, key + ".sip"}, {inst.HTTP.Endpoint, key + ".http"}} {
			if a.e.IsZero() {
				continue
			}
			if _, err := netip.ParseAddr(a.e.Host); err != nil && !hostNames {
				bad(i, a.key, "%s: give an IP address", a.e)
			}
			if a.e.Port == 0 {
				bad(i, a.key, "%s: an instance needs a port other than 0", a.e)
			}
			if first, dup := addrs[a.e.String()]; dup {
				bad(i, a.key, "%s is also %s", a.e, first)
			}
			addrs[a.e.String()] = a.key
		}
		if inst.Weight < 0 || inst.Weight > MaxWeight {
			bad(i, key+".weight", "%d: must be from 0 to %d", inst.Weight, MaxWeight)
		}
		if inst.Weight > 0 {
			weighted++
			if !inst.SIP.IsZero() {
				sip++
			}
			if !inst.HTTP.IsZero() {
				http++
			}
		}
	}
	switch {
	case reported() || others:
		// What the instances offer is unknown (or not all of it): say
		// nothing of it.
	case weighted == 0:
		bad(-1, "instances", "every instance has weight 0, so none can take a key")
	case len(listen.SIP) > 0 && sip == 0:
		bad(-1, "listen.sip", "no instance of weight > 0 has a sip address")
	case !listen.HTTP.IsZero() && http == 0:
		bad(-1, "listen.http", "no instance of weight > 0 has an http address")
	case !listen.HTTPS.IsZero() && http == 0:
		bad(-1, "listen.https", "no instance of weight > 0 has an http address")
	}
}

func hasTransport(listen []SIPAddr, transport string) bool {
	for _, a := range listen {
		if a.Transport == transport {
			return true
		}
	}
	return false
}

// validName is SPEC section 9a's [A-Za-z0-9._-]+: safe in headers, cookies
// and SIP parameters without escaping.
func validName(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}

func (d *decoder) validateHealth(h *Health) {
	positive := func(v int64, key string) {
		if v <= 0 {
			d.errorf(d.line(key), key, "must be greater than 0")
		}
	}
	positive(int64(h.Interval), "health.interval")
	positive(int64(h.Timeout), "health.timeout")
	positive(int64(h.Rise), "health.rise")
	positive(int64(h.Fall), "health.fall")
	if h.Timeout > h.Interval && h.Interval > 0 {
		d.errorf(d.line("health.timeout"), "health.timeout", "%v is longer than health.interval %v", h.Timeout, h.Interval)
	}
	if !strings.HasPrefix(h.HTTPPath, "/") || strings.ContainsAny(h.HTTPPath, " \t\r\n") {
		d.errorf(d.line("health.http_path"), "health.http_path", "%q: want a path starting with /", h.HTTPPath)
	}
}

func (d *decoder) validateHTTP(h *HTTP) {
	for _, x := range []struct {
		v   time.Duration
		key string
	}{
		{h.ReadHeaderTimeout, "read_header_timeout"}, {h.IdleTimeout, "idle_timeout"},
		{h.WriteTimeout, "write_timeout"}, {h.DialTimeout, "dial_timeout"},
		{h.ResponseTimeout, "response_timeout"}, {h.UpstreamIdleTimeout, "upstream_idle_timeout"},
		{h.Grace, "grace"},
	} {
		if x.v <= 0 {
			d.errorf(d.line("http."+x.key), "http."+x.key, "must be greater than 0")
		}
	}
	for _, x := range []struct {
		v, lo, hi int
		key       string
	}{
		{h.MaxIdlePerInstance, 0, 100_000, "max_idle_per_instance"},
		{h.MaxConnections, 1, 1_000_000, "max_connections"},
		{h.MaxHeaderBytes, 1024, 1 << 20, "max_header_bytes"},
		{h.MaxHeaders, 8, 10_000, "max_headers"},
	} {
		if x.v < x.lo || x.v > x.hi {
			d.errorf(d.line("http."+x.key), "http."+x.key, "%d: must be from %d to %d", x.v, x.lo, x.hi)
		}
	}
}

func (d *decoder) validateRule(r Rule, key string, sip bool) {
	line := d.line(key)
	sources := sourcesOf(r.Header, r.Cookie, r.Query, r.RequestURI, false)
	switch {
	case len(sources) == 0:
		d.errorf(line, key, "give one source: header, cookie, query or request_uri")
		return
	case len(sources) > 1:
		d.errorf(line, key, "give one source, not %s", strings.Join(sources, " and "))
		return
	}
	if sip && (r.Cookie != "" || r.Query != "") {
		d.errorf(line, key, "%s is not a source of a SIP request", sources[0])
	}
	if r.URIUser && r.URIParam != "" {
		d.errorf(line, key, "give uri_user or uri_param, not both")
	}
	if r.Header != "" && !validToken(r.Header) {
		d.errorf(d.line(key+".header"), key+".header", "%q is not a header name", r.Header)
	}
	if r.When != nil {
		d.validateCondition(*r.When, key+".when", sip)
	}
}

// validateCondition checks a rule's when: one source, one test.
func (d *decoder) validateCondition(c Condition, key string, sip bool) {
	line := d.line(key)
	sources := sourcesOf(c.Header, c.Cookie, c.Query, c.RequestURI, c.Method)
	switch {
	case len(sources) == 0:
		d.errorf(line, key, "give one source: header, cookie, query, request_uri or method")
	case len(sources) > 1:
		d.errorf(line, key, "give one source, not %s", strings.Join(sources, " and "))
	case sip && (c.Cookie != "" || c.Query != ""):
		d.errorf(line, key, "%s is not a source of a SIP request", sources[0])
	case c.Header != "" && !validToken(c.Header):
		d.errorf(d.line(key+".header"), key+".header", "%q is not a header name", c.Header)
	}
	var tests []string
	if c.Exists != nil {
		tests = append(tests, "exists")
	}
	if c.Equals != nil {
		tests = append(tests, "equals")
	}
	if c.Matches.Regexp != nil {
		tests = append(tests, "matches")
	}
	switch {
	case len(tests) == 0:
		d.errorf(line, key, "give one test: exists, equals or matches")
	case len(tests) > 1:
		d.errorf(line, key, "give one test, not %s", strings.Join(tests, " and "))
	}
}

// sourcesOf names the sources set, for "give one source" errors.
func sourcesOf(header, cookie, query string, requestURI, method bool) []string {
	var s []string
	for _, x := range []struct {
		set  bool
		name string
	}{{header != "", "header"}, {cookie != "", "cookie"}, {query != "", "query"}, {requestURI, "request_uri"}, {method, "method"}} {
		if x.set {
			s = append(s, x.name)
		}
	}
	return s
}

// validToken is an RFC 9110 token: what a header name may be.
func validToken(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}

func (d *decoder) validateLimits(l *Limits) {
	for _, x := range []struct {
		v, hi float64
		key   string
	}{
		{l.SIP.Rate, 1e6, "limits.sip.rate"},
		{l.SIP.Burst, 1e7, "limits.sip.burst"},
		{l.HTTP.Rate, 1e6, "limits.http.rate"},
		{l.HTTP.Burst, 1e7, "limits.http.burst"},
		{float64(l.HTTP.Connections), 1e6, "limits.http.connections"},
	} {
		if x.v < 0 || x.v > x.hi {
			d.errorf(d.line(x.key), x.key, "%v: must be from 0 to %v", x.v, x.hi)
		}
	}
	for _, x := range []struct {
		rate, burst float64
		key         string
	}{{l.SIP.Rate, l.SIP.Burst, "limits.sip.burst"}, {l.HTTP.Rate, l.HTTP.Burst, "limits.http.burst"}} {
		if x.rate > 0 && x.burst > 0 && x.burst < 1 {
			d.errorf(d.line(x.key), x.key, "%v: must be at least 1 (a whole request)", x.burst)
		}
	}
	if l.MaxSources < 64 || l.MaxSources > 10_000_000 {
		d.errorf(d.line("limits.max_sources"), "limits.max_sources", "%d: must be from 64 to 10000000", l.MaxSources)
	}
}
