package config

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const minimal = `
listen:
  sip: udp://127.0.0.1:5060
instances:
  - name: a
    sip: 127.0.0.1:5071
`

func TestDefaults(t *testing.T) {
	c, err := Parse("min.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Listen.SIP) != 1 || c.Listen.SIP[0].String() != "udp://127.0.0.1:5060" {
		t.Errorf("listen.sip %v", c.Listen.SIP)
	}
	if !c.Listen.HTTP.IsZero() || !c.Listen.Admin.IsZero() {
		t.Errorf("http %q admin %q, want none", c.Listen.HTTP, c.Listen.Admin)
	}
	inst := c.Instances[0]
	if inst.Weight != DefaultWeight || inst.SIP.String() != "udp://127.0.0.1:5071" || !inst.HTTP.IsZero() {
		t.Errorf("instance %+v", inst)
	}
	want := Defaults()
	if c.Health != want.Health || c.LoadFactor != want.LoadFactor || c.Admin != want.Admin || c.HTTP != want.HTTP {
		t.Errorf("health %+v loadfactor %+v admin %+v http %+v, want defaults", c.Health, c.LoadFactor, c.Admin, c.HTTP)
	}
	if c.HTTP.MaxConnections != 10_000 || c.HTTP.Grace != 10*time.Second {
		t.Errorf("http defaults %+v", c.HTTP)
	}
	if c.Health.Interval != 2*time.Second || c.LoadFactor.Start != 0.1 || !c.Health.Active {
		t.Errorf("defaults are not SPEC 9a's: %+v %+v", c.Health, c.LoadFactor)
	}
	if c.File != "min.yaml" {
		t.Errorf("File %q", c.File)
	}
}

func TestExampleFile(t *testing.T) {
	c, err := Load("../clb.yaml.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Instances) != 3 || len(c.Listen.SIP) != 2 || c.Listen.SIP[1].Transport != "tcp" {
		t.Errorf("example: %d instances, listen.sip %v", len(c.Instances), c.Listen.SIP)
	}
	if len(c.Keys.SIP) != 1 || !c.Keys.SIP[0].URIUser || c.Keys.HTTP[1].Regexp.Regexp == nil {
		t.Errorf("example keys: %+v", c.Keys)
	}
}

func TestAddresses(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // String() of the parsed address; "" for an error
		host string
	}{
		{in: "udp://127.0.0.1:5071", want: "udp://127.0.0.1:5071", host: "127.0.0.1"},
		{in: "TCP://sip.example.com", want: "tcp://sip.example.com:5060", host: "sip.example.com"},
		{in: "[::1]:5070", want: "udp://[::1]:5070", host: "::1"},
		{in: "tcp://[2001:db8::7]", want: "tcp://[2001:db8::7]:5060", host: "2001:db8::7"},
		{in: "udp://127.0.0.1:0", want: "udp://127.0.0.1:0", host: "127.0.0.1"},
		{in: "sctp://127.0.0.1:5060"},
		{in: "udp://127.0.0.1:65536"},
		{in: "udp://127.0.0.1:x"},
		{in: "udp://user@127.0.0.1"},
		{in: "udp://bad_host:5060"},
		{in: "udp://:5060"},
	} {
		var a SIPAddr
		err := a.UnmarshalYAML(&yaml.Node{Kind: yaml.ScalarNode, Value: tc.in})
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%q accepted as %s", tc.in, a)
		case tc.want != "" && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.want != "" && (a.String() != tc.want || a.Host != tc.host):
			t.Errorf("%q parsed as %s host %q, want %s host %q", tc.in, a, a.Host, tc.want, tc.host)
		}
	}
}

// wsBase is a file with a ws:// listener, for the ws section's errors.
const wsBase = "listen:\n  sip: [udp://127.0.0.1:5060, ws://127.0.0.1:8088/sip]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n"

// TestBadFiles: every error names the file, the line and the key.
func TestBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		line int
		key  string
		msg  string
	}{
		{
			name: "unknown top-level key",
			yaml: "listen: {sip: udp://127.0.0.1:5060}\ninstances: [{name: a, sip: 127.0.0.1:1}]\nhealht: {}\n",
			line: 3, key: "healht", msg: "unknown key",
		},
		{
			name: "unknown instance key",
			yaml: `
listen:
  http: 127.0.0.1:8080
instances:
  - name: a
    http: http://127.0.0.1:8081
  - name: b
    http: http://127.0.0.1:8082
    wieght: 5
`,
			line: 9, key: "instances[1].wieght", msg: "unknown key",
		},
		{
			name: "duplicate name",
			yaml: `
listen:
  http: 127.0.0.1:8080
instances:
  - name: a
    http: http://127.0.0.1:8081
  - name: a
    http: http://127.0.0.1:8082
`,
			line: 7, key: "instances[1].name", msg: "duplicate name",
		},
		{
			name: "bad duration",
			yaml: minimal + "health:\n  interval: 2x\n",
			line: 8, key: "health.interval", msg: "duration",
		},
		{
			name: "duration without unit",
			yaml: minimal + "loadfactor:\n  period: 10\n",
			line: 8, key: "loadfactor.period", msg: "duration",
		},
		{
			name: "negative weight",
			yaml: minimal + "  - name: b\n    sip: 127.0.0.1:5072\n    weight: -5\n",
			line: 9, key: "instances[1].weight", msg: "from 0 to",
		},
		{
			name: "weight not a number",
			yaml: minimal + "    weight: heavy\n",
			line: 7, key: "instances[0].weight", msg: "whole number",
		},
		{
			name: "no instances",
			yaml: "listen:\n  sip: udp://127.0.0.1:5060\ninstances: []\n",
			line: 3, key: "instances", msg: "at least one instance",
		},
		{
			name: "no instances key",
			yaml: "listen:\n  sip: udp://127.0.0.1:5060\n",
			line: 1, key: "instances", msg: "at least one instance",
		},
		{
			name: "bad instance address",
			yaml: "listen: {sip: udp://127.0.0.1:5060}\ninstances:\n  - name: a\n    sip: udp://127.0.0.1:99999\n",
			line: 4, key: "instances[0].sip", msg: "port",
		},
		{
			name: "instance port 0",
			yaml: "listen: {sip: udp://127.0.0.1:5060}\ninstances:\n  - name: a\n    sip: udp://127.0.0.1:0\n",
			line: 4, key: "instances[0].sip", msg: "port other than 0",
		},
		{
			name: "bad http scheme",
			yaml: "listen: {http: 127.0.0.1:8080}\ninstances:\n  - name: a\n    http: ftp://127.0.0.1:21\n",
			line: 4, key: "instances[0].http", msg: "not supported",
		},
		{
			name: "listen address without port",
			yaml: "listen:\n  http: localhost\ninstances: [{name: a, http: http://127.0.0.1:1}]\n",
			line: 2, key: "listen.http", msg: "host:port",
		},
		{
			name: "bad name",
			yaml: "listen: {sip: udp://127.0.0.1:5060}\ninstances:\n  - name: 'a b'\n    sip: 127.0.0.1:1\n",
			line: 3, key: "instances[0].name", msg: "letters, digits",
		},
		{
			name: "instance without address",
			yaml: "listen: {sip: udp://127.0.0.1:5060}\ninstances:\n  - name: a\n  - name: b\n    sip: 127.0.0.1:1\n",
			line: 3, key: "instances[0]", msg: "sip address, an http address or both",
		},
		{
			name: "two instances, one address",
			yaml: "listen: {sip: udp://127.0.0.1:5060}\ninstances:\n  - {name: a, sip: 127.0.0.1:1}\n  - {name: b, sip: 'udp://127.0.0.1:1'}\n",
			line: 4, key: "instances[1].sip", msg: "also instances[0].sip",
		},
		{
			name: "sip listener on a name",
			yaml: "listen:\n  sip: [udp://127.0.0.1:5060, tcp://sip.example.com]\ninstances: [{name: a, sip: 127.0.0.1:1}]\n",
			line: 2, key: "listen.sip[1]", msg: "give the IP address",
		},
		{
			name: "sip listener on every interface",
			yaml: "listen:\n  sip: udp://0.0.0.0:5060\ninstances: [{name: a, sip: 127.0.0.1:1}]\n",
			line: 2, key: "listen.sip[0]", msg: "not 0.0.0.0",
		},
		{
			name: "instance transport without listener",
			yaml: "listen: {sip: udp://127.0.0.1:5060}\ninstances:\n  - name: a\n    sip: tcp://127.0.0.1:5071\n",
			line: 4, key: "instances[0].sip", msg: "no tcp listener",
		},
		{
			name: "instance sip on a name, no listener for its transport",
			yaml: "listen: {sip: udp://127.0.0.1:5060}\ninstances:\n  - name: a\n    sip: tcp://app1.example.com\n",
			line: 4, key: "instances[0].sip", msg: "no tcp listener",
		},
		{
			name: "resolver by name",
			yaml: minimal + "discovery:\n  resolver: dns.example.com:53\n",
			line: 8, key: "discovery.resolver", msg: "want IP:port of a DNS server",
		},
		{
			name: "resolve interval 0",
			yaml: minimal + "discovery:\n  resolve_interval: 0s\n",
			line: 8, key: "discovery.resolve_interval", msg: "greater than 0",
		},
		{
			name: "resolve timeout over interval",
			yaml: minimal + "discovery:\n  resolve_interval: 1s\n  resolve_timeout: 2s\n",
			line: 9, key: "discovery.resolve_timeout", msg: "longer than discovery.resolve_interval",
		},
		{
			name: "srv name with another service",
			yaml: minimal + "discovery:\n  sip: _ftp._tcp.app.example.com\n",
			line: 8, key: "discovery.sip", msg: "want an SRV name _sip._udp.DOMAIN",
		},
		{
			name: "srv name for sip in http",
			yaml: minimal + "discovery:\n  http: _sip._tcp.app.example.com\n",
			line: 8, key: "discovery.http", msg: "want an SRV name _http._tcp.DOMAIN or _https._tcp.DOMAIN",
		},
		{
			name: "srv name without domain",
			yaml: minimal + "discovery:\n  sip: _sip._udp.-x\n",
			line: 8, key: "discovery.sip", msg: `"-x" is not a domain name`,
		},
		{
			name: "srv transport without listener",
			yaml: minimal + "discovery:\n  sip: _sip._tcp.app.example.com\n",
			line: 8, key: "discovery.sip", msg: "listen.sip has no tcp listener",
		},
		{
			name: "refresh 0",
			yaml: minimal + "discovery:\n  refresh: 0s\n",
			line: 8, key: "discovery.refresh", msg: "greater than 0",
		},
		{
			name: "resolve timeout over refresh",
			yaml: minimal + "discovery:\n  sip: _sip._udp.app.example.com\n  refresh: 1s\n  resolve_timeout: 1500ms\n",
			line: 10, key: "discovery.resolve_timeout", msg: "longer than discovery.refresh 1s",
		},
		{
			name: "no listener",
			yaml: "listen:\n  admin: 127.0.0.1:9090\ninstances: [{name: a, sip: 127.0.0.1:1}]\n",
			line: 1, key: "listen", msg: "listen.sip, listen.http or both",
		},
		{
			name: "listeners clash",
			yaml: "listen:\n  http: 127.0.0.1:8080\n  admin: 127.0.0.1:8080\ninstances: [{name: a, http: http://127.0.0.1:1}]\n",
			line: 3, key: "listen.admin", msg: "also listen.http",
		},
		{
			name: "admin elsewhere without token",
			yaml: "listen:\n  http: 127.0.0.1:8080\n  admin: 0.0.0.0:9090\ninstances: [{name: a, http: http://127.0.0.1:1}]\n",
			line: 3, key: "listen.admin", msg: "admin.token",
		},
		{
			name: "sip listener, no sip instance",
			yaml: "listen:\n  sip: udp://127.0.0.1:5060\ninstances: [{name: a, http: http://127.0.0.1:1}]\n",
			line: 2, key: "listen.sip", msg: "no instance",
		},
		{
			name: "every weight 0",
			yaml: "listen: {sip: udp://127.0.0.1:5060}\ninstances:\n  - {name: a, sip: 127.0.0.1:1, weight: 0}\n",
			line: 2, key: "instances", msg: "weight 0",
		},
		{
			name: "timeout over interval",
			yaml: minimal + "health:\n  interval: 1s\n  timeout: 2s\n",
			line: 9, key: "health.timeout", msg: "longer than",
		},
		{
			name: "rise 0",
			yaml: minimal + "health:\n  rise: 0\n",
			line: 8, key: "health.rise", msg: "greater than 0",
		},
		{
			name: "no client connections",
			yaml: minimal + "http:\n  max_connections: 0\n",
			line: 8, key: "http.max_connections", msg: "must be from 1 to",
		},
		{
			name: "start above 1",
			yaml: minimal + "loadfactor:\n  start: 1.5\n",
			line: 8, key: "loadfactor.start", msg: "outside",
		},
		{
			name: "rule with two sources",
			yaml: minimal + "keys:\n  http:\n    - {header: X-User, cookie: u}\n",
			line: 9, key: "keys.http[0]", msg: "one source",
		},
		{
			name: "cookie rule for SIP",
			yaml: minimal + "keys:\n  sip:\n    - cookie: u\n",
			line: 9, key: "keys.sip[0]", msg: "not a source of a SIP request",
		},
		{
			name: "condition without a test",
			yaml: minimal + "keys:\n  sip:\n    - header: X-A\n      when: {header: X-B}\n",
			line: 10, key: "keys.sip[0].when", msg: "give one test: exists, equals or matches",
		},
		{
			name: "condition with two tests",
			yaml: minimal + "keys:\n  sip:\n    - header: X-A\n      when: {header: X-B, exists: true, equals: x}\n",
			line: 10, key: "keys.sip[0].when", msg: "give one test, not exists and equals",
		},
		{
			name: "condition with two sources",
			yaml: minimal + "keys:\n  http:\n    - header: X-A\n      when: {header: X-B, method: true, exists: true}\n",
			line: 10, key: "keys.http[0].when", msg: "give one source, not header and method",
		},
		{
			name: "condition without a source",
			yaml: minimal + "keys:\n  http:\n    - header: X-A\n      when: {equals: x}\n",
			line: 10, key: "keys.http[0].when", msg: "give one source: header, cookie, query, request_uri or method",
		},
		{
			name: "cookie condition for SIP",
			yaml: minimal + "keys:\n  sip:\n    - header: X-A\n      when: {cookie: c, exists: true}\n",
			line: 10, key: "keys.sip[0].when", msg: "not a source of a SIP request",
		},
		{
			name: "condition with a bad expression",
			yaml: minimal + "keys:\n  sip:\n    - header: X-A\n      when: {method: true, matches: '(['}\n",
			line: 10, key: "keys.sip[0].when.matches", msg: "missing closing",
		},
		{
			name: "unknown key in a condition",
			yaml: minimal + "keys:\n  sip:\n    - header: X-A\n      when: {header: X-B, is: x}\n",
			line: 10, key: "keys.sip[0].when.is", msg: "unknown key (known: cookie, equals, exists, header, matches, method, query, request_uri)",
		},
		{
			name: "negative rate",
			yaml: minimal + "limits:\n  sip: {rate: -1}\n",
			line: 8, key: "limits.sip.rate", msg: "must be from 0 to",
		},
		{
			name: "burst below one request",
			yaml: minimal + "limits:\n  http: {rate: 10, burst: 0.5}\n",
			line: 8, key: "limits.http.burst", msg: "at least 1",
		},
		{
			name: "bad exempt CIDR",
			yaml: minimal + "limits:\n  exempt: [10.0.0.0/33]\n",
			line: 8, key: "limits.exempt[0]", msg: "want a CIDR",
		},
		{
			name: "tiny source table",
			yaml: minimal + "limits:\n  max_sources: 3\n",
			line: 8, key: "limits.max_sources", msg: "must be from 64",
		},
		{
			name: "regexp without group",
			yaml: minimal + "keys:\n  sip:\n    - header: Call-ID\n      regexp: 'abc'\n",
			line: 10, key: "keys.sip[0].regexp", msg: "capture group",
		},
		{
			name: "bad regexp",
			yaml: minimal + "keys:\n  sip:\n    - header: Call-ID\n      regexp: '(['\n",
			line: 10, key: "keys.sip[0].regexp", msg: "missing closing",
		},
		{
			name: "duplicate key",
			yaml: minimal + "    name: b\n",
			line: 7, key: "instances[0].name", msg: "duplicate key (first at line 5)",
		},
		{
			name: "list where a mapping belongs",
			yaml: minimal + "health: [1, 2]\n",
			line: 7, key: "health", msg: "mapping",
		},
		{
			name: "YAML syntax",
			yaml: "listen:\n  sip: [udp://127.0.0.1:5060\ninstances: []\n",
			line: 2, key: "", msg: "YAML syntax", // where the [ is left open
		},
		{name: "instance on ws", yaml: "listen:\n  sip: [ws://127.0.0.1:8088/sip]\ninstances:\n  - {name: a, sip: ws://127.0.0.1:5071}\n",
			line: 4, key: "instances[0].sip", msg: "udp, tcp or tls"},
		{name: "query in the path", yaml: "listen:\n  sip: [\"ws://127.0.0.1:8088/sip?x=1\"]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n",
			line: 2, key: "listen.sip[0]", msg: "no query"},
		{name: "path on udp", yaml: "listen:\n  sip: [udp://127.0.0.1:5060/sip]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n",
			line: 2, key: "listen.sip[0]", msg: "no path"},
		{name: "ws clashes with tcp", yaml: "listen:\n  sip: [udp://127.0.0.1:5060, tcp://127.0.0.1:5060, ws://127.0.0.1:5060]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n",
			line: 2, key: "listen.sip[2]", msg: "also listen.sip[1]"},
		{name: "origin with a path", yaml: wsBase + "ws: {origins: [https://phone.example.com/app]}\n", line: 4, key: "ws.origins[0]", msg: "want an origin"},
		{name: "origin without scheme", yaml: wsBase + "ws: {origins: [phone.example.com]}\n", line: 4, key: "ws.origins[0]", msg: "want an origin"},
		{name: "ping not shorter than idle", yaml: wsBase + "ws: {ping_interval: 2m, idle_timeout: 1m}\n", line: 4, key: "ws.ping_interval", msg: "shorter than ws.idle_timeout"},
		{name: "no idle timeout", yaml: wsBase + "ws: {idle_timeout: 0s, ping_interval: 0s}\n", line: 4, key: "ws.idle_timeout", msg: "greater than 0"},
		{name: "max_connections 0", yaml: wsBase + "ws: {max_connections: 0}\n", line: 4, key: "ws.max_connections", msg: "from 1 to"},
		{name: "max_message too large", yaml: wsBase + "ws: {max_message: 100000}\n", line: 4, key: "ws.max_message", msg: "from 1024 to 65535"},
		{name: "unknown key", yaml: wsBase + "ws: {origin: [https://a.example.com]}\n", line: 4, key: "ws.origin", msg: ""},
		{
			name: "YAML indentation",
			yaml: "listen:\n  sip: udp://127.0.0.1:5060\ninstances:\n  - name: a\n sip: 127.0.0.1:1\n",
			line: 5, key: "", msg: "YAML syntax",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error %T %v is not a *config.Error", err, err)
			}
			if cerr.File != "bad.yaml" || cerr.Line != tc.line || cerr.Key != tc.key || !strings.Contains(cerr.Msg, tc.msg) {
				t.Errorf("got %v\nwant bad.yaml:%d: %s: …%s…", err, tc.line, tc.key, tc.msg)
			}
			prefix := "bad.yaml:" + strconv.Itoa(tc.line) + ": "
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("message %q does not start with %q", err, prefix)
			}
		})
	}
}

// TestDiscoverySRV: with an SRV name the file may give no instance, or
// instances that do not serve every listener (DNS gives the others); the
// defaults and the transports the names say.
func TestDiscoverySRV(t *testing.T) {
	c, err := Parse("srv.yaml", []byte(`listen: {sip: [udp://127.0.0.1:5060, tcp://127.0.0.1:5060], http: 127.0.0.1:8080}
discovery:
  sip: _sip._tcp.App.Example.com.
  http: _http._tcp.app.example.com
`))
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Discovery; !d.SRV() || d.Refresh != 10*time.Second || len(c.Instances) != 0 {
		t.Errorf("discovery %+v, instances %v", d, c.Instances)
	}
	if _, err := Parse("srv.yaml", []byte("listen: {sip: udp://127.0.0.1:5060, http: 127.0.0.1:8080}\ninstances: [{name: a, sip: 127.0.0.1:5071}]\ndiscovery: {http: _http._tcp.app.example.com}\n")); err != nil {
		t.Errorf("a SIP instance in the file, HTTP ones from DNS: %v", err)
	}
	for name, want := range map[string][2]string{
		"_sip._udp.example.com": {"udp", "example.com"}, "_SIP._TCP.example.com": {"tcp", "example.com"},
		"_sips._tcp.example.com": {"tls", "example.com"}, "_http._tcp.example.com": {"http", "example.com"},
		"_https._tcp.example.com.": {"https", "example.com"}, "_sip._udp": {"", ""}, "_ftp._tcp.example.com": {"", "example.com"},
	} {
		if tr, domain := SRVTransport(name); tr != want[0] || domain != want[1] {
			t.Errorf("SRVTransport(%q) = %q, %q, want %q", name, tr, domain, want)
		}
	}
}

// TestHostNames: the file may name an instance's hosts (they are resolved
// before anything routes: ValidateInstances, the check of what routes,
// refuses them); discovery's keys have their defaults, and the resolver's
// port is 53 unless given.
func TestHostNames(t *testing.T) {
	c, err := Parse("names.yaml", []byte(`listen: {sip: udp://127.0.0.1:5060, http: 127.0.0.1:8080}
instances:
  - {name: a, sip: app1.example.com, http: http://app1.example.com:8081}
  - {name: b, sip: udp://127.0.0.1:5072, http: http://localhost:8082}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Instances[0].SIP.String() + " " + c.Instances[0].HTTP.String(); got != "udp://app1.example.com:5060 http://app1.example.com:8081" {
		t.Errorf("addresses %s", got)
	}
	if d := c.Discovery; d.Resolver.IsValid() || d.ResolveInterval != 30*time.Second || d.ResolveTimeout != 2*time.Second {
		t.Errorf("discovery defaults %+v", d)
	}
	err = ValidateInstances(c.Instances, c.Listen)
	want := `instance "a": instances[0].sip: udp://app1.example.com:5060: give an IP address` + "\n" +
		`instance "a": instances[0].http: http://app1.example.com:8081: give an IP address` + "\n" +
		`instance "b": instances[1].http: http://localhost:8082: give an IP address`
	if err == nil || err.Error() != want {
		t.Errorf("ValidateInstances: %v\nwant\n%s", err, want)
	}
	for in, want := range map[string]string{"127.0.0.53": "127.0.0.53:53", "127.0.0.1:5353": "127.0.0.1:5353", "'[::1]:54'": "[::1]:54", "''": "invalid AddrPort"} {
		c, err := Parse("r.yaml", []byte(minimal+"discovery: {resolver: "+in+"}\n"))
		if err != nil {
			t.Fatalf("resolver %s: %v", in, err)
		}
		if got := c.Discovery.Resolver.String(); got != want {
			t.Errorf("resolver %s: %s, want %s", in, got, want)
		}
	}
}

// TestLocate: the instance errors found after Parse (the look-ups of host
// names, ValidateInstances of the resolved list) are placed at their lines
// in the file, as Parse's own; other errors pass as they are.
func TestLocate(t *testing.T) {
	c, err := Parse("names.yaml", []byte(minimal+"  - name: b\n    sip: app2.example.com\n"))
	if err != nil {
		t.Fatal(err)
	}
	other := errors.New("something else")
	err = c.Locate(errors.Join(&InstanceError{Key: "instances[1].sip", Name: "b", Msg: "app2.example.com: no such host"}, other))
	want := "names.yaml:8: instances[1].sip: app2.example.com: no such host\nsomething else"
	if err == nil || err.Error() != want {
		t.Errorf("joined: %v\nwant\n%s", err, want)
	}
	var cerr *Error
	if err := c.Locate(&InstanceError{Key: "instances[0]", Name: "a", Msg: "m"}); !errors.As(err, &cerr) || cerr.Line != 5 {
		t.Errorf("alone: %#v", err)
	}
	if c.Locate(nil) != nil {
		t.Error("Locate(nil) is not nil")
	}
}

func TestAllErrorsReported(t *testing.T) {
	_, err := Parse("bad.yaml", []byte(`
listen: {sip: udp://127.0.0.1:5060}
instances:
  - {name: a, sip: 127.0.0.1:1, weight: -1}
  - {name: a, sip: 127.0.0.1:2}
health: {rise: 0}
`))
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 {
		t.Errorf("want 3 errors, one a line:\n%v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load("testdata/does-not-exist.yaml"); err == nil || !strings.Contains(err.Error(), "does-not-exist") {
		t.Errorf("missing file: %v", err)
	}
}
