package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"clb/balancer"
	"clb/config"
	"clb/dnstest"
	"clb/etcdstate/etcdtest"
)

// dashboardFile is the Grafana dashboard of docs/.
const dashboardFile = "../../docs/grafana-dashboard.json"

// dashboardQueries are the PromQL expressions of the dashboard: every
// panel's targets (rows' nested panels too) and the template variables'
// queries.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var exprs []string
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p struct {
				Title   string            `json:"title"`
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q: a target without expr", p.Title)
				}
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q) != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // a plain string
		}
		exprs = append(exprs, q.Query)
	}
	return exprs
}

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	labelValues  = regexp.MustCompile(`\blabel_values\(\s*([^,()]+)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	promKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}
)

// metricNames are the metric names an expression reads: what is left once
// strings, label matchers, ranges, groupings and function calls are taken
// out, and label_values(METRIC, LABEL) is read as METRIC.
func metricNames(expr string) []string {
	e := labelValues.ReplaceAllString(expr, "$1")
	e = promStrings.ReplaceAllString(e, `""`)
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRanges.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	var names []string
	for _, m := range promIdent.FindAllStringSubmatchIndex(e, -1) {
		if m[2] >= 0 {
			continue // a function
		}
		name := e[m[0]:m[1]]
		if m[0] > 0 && (e[m[0]-1] == '$' || e[m[0]-1] >= '0' && e[m[0]-1] <= '9' || e[m[0]-1] == '.') {
			continue // a Grafana variable, or a number's exponent
		}
		if !slices.Contains(promKeywords, strings.ToLower(name)) {
			names = append(names, name)
		}
	}
	return names
}

// TestMetricNames: the extraction on expressions of the dashboard's kinds.
func TestMetricNames(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (instance, protocol) (rate(clb_requests_total{job=~"$job", instance=~"a|b"}[$__rate_interval]))`:   "clb_requests_total",
		`histogram_quantile(0.99, sum by (le) (rate(clb_health_probe_seconds_bucket{x="{y}"}[5m])))`:               "clb_health_probe_seconds_bucket",
		`sum(rate(a_sum[1m])) / on (x) group_left (y) sum(rate(a_count[1m])) * 1e3 > bool 2 or vector(0)`:          "a_sum a_count",
		`label_values(clb_instance_state{job=~"$job"}, instance)`:                                                  "clb_instance_state",
		`clb_instance_state{state="up"} * 4 or clb_instance_state{state="down"} offset 5m unless process_open_fds`: "clb_instance_state clb_instance_state process_open_fds",
	} {
		if got := strings.Join(metricNames(expr), " "); got != want {
			t.Errorf("%s: %q, want %q", expr, got, want)
		}
	}
}

// TestDashboardMetricsExist: every metric name the dashboard's queries use
// is on /metrics of a running clb, and every clb_* metric there has a query
// on the dashboard. The clb is given the traffic that makes every labelled
// series appear (a vector shows on /metrics only once it has one): requests
// relayed, one retried on the replica partner, a sticky repair, one refused,
// a new session, and a round of health probes that pass and fail.
func TestDashboardMetricsExist(t *testing.T) {
	exprs := dashboardQueries(t)
	if len(exprs) < 10 {
		t.Fatalf("%d queries in %s", len(exprs), dashboardFile)
	}

	// a answers everything; b closes the connection on /retry without an
	// answer (and so has the request retried on its replica partner a), and
	// passes its probes; c refuses connections and is marked down by the
	// first round of probes (fall 1): its log line says the round is done.
	a := newBackend(t, "a")
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/retry" {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		fmt.Fprintln(w, "b")
	}))
	defer b.Close()
	// clb_etcd_up is on /metrics of a clb with etcd configured only.
	etcdYAML := ""
	if etcdtest.Wanted() {
		etcdYAML = "etcd: {endpoints: [" + etcdtest.Start(t).URL() + "]}\n"
	}
	// An SRV name without records: clb_discovery_up, routing unchanged.
	dnsYAML := ""
	if dnstest.Wanted() {
		dnsYAML = fmt.Sprintf("discovery: {http: _http._tcp.none.test, resolver: %q}\n", dnstest.Start(t, nil).Addr())
	}
	yaml := etcdYAML + dnsYAML + `listen: {sip: [udp://127.0.0.1:0], http: 127.0.0.1:0, admin: 127.0.0.1:0}
health: {interval: 200ms, timeout: 200ms, rise: 1, fall: 1}
keys:
  http: [{query: user}]
instances:
` + a.yaml() + fmt.Sprintf("  - {name: b, http: %s}\n  - {name: c, http: http://127.0.0.1:1, weight: 0}\n", b.URL)
	path := writeFile(t, yaml)
	cfg, err := config.Parse(path, []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	bal, err := balancer.New(cfg.Instances, cfg.LoadFactor.Params())
	if err != nil {
		t.Fatal(err)
	}
	keyOf := func(owner string) string {
		for i := 0; ; i++ {
			if d := bal.Table().RouteFor(balancer.HTTP, fmt.Sprint("u", i), "", time.Now()); d.Owner.Name == owner {
				return fmt.Sprint("u", i)
			}
		}
	}
	p := startCLB(t, path)
	httpAddr, adminAddr := p.started["http"].(string), p.started["admin"].(string)

	get := func(path string, header ...string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+httpAddr+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	if st := get("/retry?user=" + keyOf("b")); st != 200 {
		t.Errorf("retried request: %d", st)
	}
	if st := get("/home?user="+keyOf("a"), "Cookie", "CLBROUTE=b"); st != 200 {
		t.Errorf("repaired request: %d", st)
	}
	if st := get("/new"); st != 200 { // a new key: a session
		t.Errorf("new session: %d", st)
	}
	conn, err := net.Dial("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") // refused: an error
	_, _ = io.ReadAll(conn)
	conn.Close()
	for e := p.log("instance health changed"); e["instance"] != "c"; e = p.log("instance health changed") {
	}

	res, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	exposed := map[string]string{} // sample name → family
	for name, f := range families {
		exposed[name] = name
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				exposed[name+s] = name
			}
		case dto.MetricType_SUMMARY:
			for _, s := range []string{"_sum", "_count"} {
				exposed[name+s] = name
			}
		}
	}
	used := map[string]bool{}
	for _, expr := range exprs {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("no metric in %s", expr)
		}
		for _, name := range names {
			f, ok := exposed[name]
			if !ok && name == "clb_etcd_up" && etcdYAML == "" {
				t.Logf("%s: not checked, etcd is not installed", name)
				continue
			}
			if !ok && name == "clb_discovery_up" && dnsYAML == "" {
				t.Logf("%s: not checked, dnsmasq is not installed", name)
				continue
			}
			if !ok {
				t.Errorf("%s is not on /metrics (query %s)", name, expr)
			}
			used[f] = true
		}
	}
	for name := range families {
		if strings.HasPrefix(name, "clb_") && !used[name] {
			t.Errorf("%s is on /metrics but on no panel of the dashboard", name)
		}
	}
}

// TestDashboardLayout: Grafana keys panels by id and places them on a
// 24-column grid; a repeated id or two panels on one cell hide one of them.
func TestDashboardLayout(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type grid struct{ X, Y, W, H int }
	var dash struct {
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			GridPos grid   `json:"gridPos"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	ids := map[int]string{}
	for i, p := range dash.Panels {
		if other, ok := ids[p.ID]; ok {
			t.Errorf("panels %q and %q have id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for _, q := range dash.Panels[:i] {
			h := q.GridPos
			if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				t.Errorf("panels %q %+v and %q %+v overlap", q.Title, h, p.Title, g)
			}
		}
	}
}
