package metrics

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
)

// scrape fetches /metrics over a real socket and parses it with the
// Prometheus text parser.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept", "text/plain")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); expfmt.ResponseFormat(res.Header).FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("Content-Type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value is the value of the sample of family name with exactly labels.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no %s", name)
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels) {
			continue
		}
		for _, l := range m.Label {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

func TestScrape(t *testing.T) {
	ins := []config.Instance{{Name: "a", Weight: 100}, {Name: "b", Weight: 50}}
	bal, err := balancer.New(ins, loadfactor.Params{Start: 0.25, Increase: 0.25, Period: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m := New(func() *balancer.Balancer { return bal })
	for range 3 {
		m.Request("sip", "INVITE", "a", "forwarded")
	}
	m.Request("sip", "invite", "a", "forwarded") // lower case counts with INVITE
	m.Request("http", "BREW", "", "refused")
	m.Request("http", string([]byte("GET")), "b", "2xx")
	m.Session("sip", "a")
	m.Session("http", "b")
	m.Repair("http")
	m.Retry("http")
	m.Retry("http")
	m.Error("sip", "send")
	m.Probe("a", "sip", true, 2*time.Millisecond)
	m.Probe("a", "sip", false, time.Second)
	if err := bal.SetHealth("b", false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := bal.SetHealth("b", true, time.Now()); err != nil { // back: ramping at 0.25
		t.Fatal(err)
	}

	fams := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"clb_requests_total", map[string]string{"protocol": "sip", "method": "INVITE", "instance": "a", "outcome": "forwarded"}, 4},
		{"clb_requests_total", map[string]string{"protocol": "http", "method": "other", "instance": "none", "outcome": "refused"}, 1},
		{"clb_requests_total", map[string]string{"protocol": "http", "method": "GET", "instance": "b", "outcome": "2xx"}, 1},
		{"clb_sessions_total", map[string]string{"protocol": "sip", "instance": "a"}, 1},
		{"clb_sticky_repairs_total", map[string]string{"protocol": "http"}, 1},
		{"clb_retries_total", map[string]string{"protocol": "http"}, 2},
		{"clb_errors_total", map[string]string{"protocol": "sip", "kind": "send"}, 1},
		{"clb_health_probes_total", map[string]string{"instance": "a", "protocol": "sip", "result": "ok"}, 1},
		{"clb_health_probes_total", map[string]string{"instance": "a", "protocol": "sip", "result": "fail"}, 1},
		{"clb_health_probe_seconds", map[string]string{"instance": "a", "protocol": "sip"}, 1}, // failures have no latency
		{"clb_instance_state", map[string]string{"instance": "a", "state": "up"}, 1},
		{"clb_instance_state", map[string]string{"instance": "b", "state": "up"}, 0},
		{"clb_instance_state", map[string]string{"instance": "b", "state": "ramping"}, 1},
		{"clb_instance_load_factor", map[string]string{"instance": "a"}, 1},
		{"clb_instance_load_factor", map[string]string{"instance": "b"}, 0.25},
		{"clb_instance_weight", map[string]string{"instance": "b"}, 50},
	} {
		if got := value(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
	if a := m.Instance("a"); a.Requests.Load() != 4 || a.Sessions.Load() != 1 {
		t.Errorf("a's counts %d %d", a.Requests.Load(), a.Sessions.Load())
	}
}

// TestCountingDoesNotAllocate: the per-message path pays no allocation once
// a label set has been seen; a nil Metrics counts nothing.
func TestCountingDoesNotAllocate(t *testing.T) {
	m := New(nil)
	method := []byte("GET")
	m.Request("http", Method(method), "a", "2xx")
	if n := testing.AllocsPerRun(100, func() {
		m.Request("http", Method(method), "a", "2xx")
		m.Session("http", "a")
	}); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
	var none *Metrics
	none.Request("sip", "INVITE", "a", "forwarded")
	none.Error("sip", "x")
	none.Probe("a", "sip", true, 0)
}

// TestSetInstancesDropsRemoved: the series and counts of an instance that
// left the list are gone from the scrape; the others', and those of requests
// no instance took, stay; counting a removed instance again starts afresh.
func TestSetInstancesDropsRemoved(t *testing.T) {
	m := New(nil)
	for _, name := range []string{"a", "b"} {
		m.Request("sip", "INVITE", name, "forwarded")
		m.Session("sip", name)
		m.Probe(name, "sip", true, time.Millisecond)
		m.Probe(name, "http", false, time.Second)
	}
	m.Request("http", "GET", "", "refused")
	m.SetInstances([]config.Instance{{Name: "a", Weight: 100}})

	fams := scrape(t, m)
	for _, name := range []string{"clb_requests_total", "clb_sessions_total", "clb_health_probes_total", "clb_health_probe_seconds"} {
		for _, s := range fams[name].GetMetric() {
			for _, l := range s.Label {
				if l.GetName() == "instance" && l.GetValue() == "b" {
					t.Errorf("%s of removed b still scraped: %v", name, s.Label)
				}
			}
		}
	}
	if got := value(t, fams, "clb_requests_total", map[string]string{"protocol": "sip", "method": "INVITE", "instance": "a", "outcome": "forwarded"}); got != 1 {
		t.Errorf("a's requests %v, want 1", got)
	}
	if got := value(t, fams, "clb_requests_total", map[string]string{"protocol": "http", "method": "GET", "instance": "none", "outcome": "refused"}); got != 1 {
		t.Errorf("requests no instance took %v, want 1", got)
	}
	if got := value(t, fams, "clb_health_probe_seconds", map[string]string{"instance": "a", "protocol": "sip"}); got != 1 {
		t.Errorf("a's probe latencies %v, want 1", got)
	}
	if a, b := m.Instance("a"), m.Instance("b"); a.Requests.Load() != 1 || b.Requests.Load() != 0 || b.Sessions.Load() != 0 {
		t.Errorf("counts: a %d requests, b %d requests %d sessions", a.Requests.Load(), b.Requests.Load(), b.Sessions.Load())
	}

	m.Request("sip", "INVITE", "b", "forwarded") // b is back
	if got := value(t, scrape(t, m), "clb_requests_total", map[string]string{"protocol": "sip", "method": "INVITE", "instance": "b", "outcome": "forwarded"}); got != 1 {
		t.Errorf("b's requests after it came back %v, want 1", got)
	}
}
