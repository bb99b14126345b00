package metrics

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
)

// families are the families a clb with etcd and SRV discovery served under
// the Prometheus client library, by name and type: dashboards and alerts
// are written against them.
var families = map[string]dto.MetricType{
	"clb_cluster_sessions": dto.MetricType_GAUGE, "clb_cluster_weight": dto.MetricType_GAUGE,
	"clb_discovery_up": dto.MetricType_GAUGE, "clb_errors_total": dto.MetricType_COUNTER,
	"clb_etcd_up": dto.MetricType_GAUGE, "clb_health_probe_seconds": dto.MetricType_HISTOGRAM,
	"clb_health_probes_total": dto.MetricType_COUNTER, "clb_instance_cluster": dto.MetricType_GAUGE,
	"clb_instance_load_factor": dto.MetricType_GAUGE, "clb_instance_state": dto.MetricType_GAUGE,
	"clb_instance_weight": dto.MetricType_GAUGE, "clb_requests_total": dto.MetricType_COUNTER,
	"clb_retries_total": dto.MetricType_COUNTER, "clb_routing_fingerprint": dto.MetricType_GAUGE,
	"clb_sessions_total": dto.MetricType_COUNTER, "clb_sticky_repairs_total": dto.MetricType_COUNTER,
	"go_gc_duration_seconds": dto.MetricType_SUMMARY, "go_gc_gogc_percent": dto.MetricType_GAUGE,
	"go_gc_gomemlimit_bytes": dto.MetricType_GAUGE, "go_goroutines": dto.MetricType_GAUGE,
	"go_info": dto.MetricType_GAUGE, "go_memstats_alloc_bytes": dto.MetricType_GAUGE,
	"go_memstats_alloc_bytes_total": dto.MetricType_COUNTER, "go_memstats_buck_hash_sys_bytes": dto.MetricType_GAUGE,
	"go_memstats_frees_total": dto.MetricType_COUNTER, "go_memstats_gc_sys_bytes": dto.MetricType_GAUGE,
	"go_memstats_heap_alloc_bytes": dto.MetricType_GAUGE, "go_memstats_heap_idle_bytes": dto.MetricType_GAUGE,
	"go_memstats_heap_inuse_bytes": dto.MetricType_GAUGE, "go_memstats_heap_objects": dto.MetricType_GAUGE,
	"go_memstats_heap_released_bytes": dto.MetricType_GAUGE, "go_memstats_heap_sys_bytes": dto.MetricType_GAUGE,
	"go_memstats_last_gc_time_seconds": dto.MetricType_GAUGE, "go_memstats_mallocs_total": dto.MetricType_COUNTER,
	"go_memstats_mcache_inuse_bytes": dto.MetricType_GAUGE, "go_memstats_mcache_sys_bytes": dto.MetricType_GAUGE,
	"go_memstats_mspan_inuse_bytes": dto.MetricType_GAUGE, "go_memstats_mspan_sys_bytes": dto.MetricType_GAUGE,
	"go_memstats_next_gc_bytes": dto.MetricType_GAUGE, "go_memstats_other_sys_bytes": dto.MetricType_GAUGE,
	"go_memstats_stack_inuse_bytes": dto.MetricType_GAUGE, "go_memstats_stack_sys_bytes": dto.MetricType_GAUGE,
	"go_memstats_sys_bytes": dto.MetricType_GAUGE, "go_sched_gomaxprocs_threads": dto.MetricType_GAUGE,
	"go_threads": dto.MetricType_GAUGE, "process_cpu_seconds_total": dto.MetricType_COUNTER,
	"process_max_fds": dto.MetricType_GAUGE, "process_network_receive_bytes_total": dto.MetricType_COUNTER,
	"process_network_transmit_bytes_total": dto.MetricType_COUNTER, "process_open_fds": dto.MetricType_GAUGE,
	"process_resident_memory_bytes": dto.MetricType_GAUGE, "process_start_time_seconds": dto.MetricType_GAUGE,
	"process_virtual_memory_bytes": dto.MetricType_GAUGE, "process_virtual_memory_max_bytes": dto.MetricType_GAUGE,
	"promhttp_metric_handler_errors_total": dto.MetricType_COUNTER,
}

// get fetches /metrics from srv with the request headers given in pairs,
// not decompressing.
func get(t *testing.T, srv *httptest.Server, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func parse(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%v in\n%s", err, body)
	}
	return fams
}

// TestExposition: after traffic of every kind, with label values that the
// format must escape (quote, backslash, line feed) and one that is not
// UTF-8, the whole scrape parses with the Prometheus text parser; it has
// the families the client library served, of their types; label values
// come back as counted; histograms are cumulative to +Inf, which is their
// count, with clb's bounds and the sum observed. Gzipped when asked, the
// same families.
func TestExposition(t *testing.T) {
	ins := []config.Instance{{Name: "a", Weight: 100}, {Name: "b", Weight: 50}}
	bal, err := balancer.New(ins, loadfactor.Params{Start: 0.25, Increase: 0.25, Period: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m := New(func() *balancer.Balancer { return bal })
	m.EtcdUp(func() bool { return true })
	m.DiscoveryUp(func() bool { return false })
	odd := []string{`say "hi"`, `C:\path\`, "two\nlines", "\\n not a line feed", `\"`}
	for _, v := range odd {
		m.Request("http", "GET", v, "2xx")
		m.Error("sip", v)
	}
	m.Request("sip", "INVITE", "a", "forwarded")
	m.Session("sip", "a")
	m.Repair("http")
	m.Retry("sip")
	took := []time.Duration{300 * time.Microsecond, time.Millisecond, 40 * time.Millisecond, 3 * time.Second}
	for _, d := range took {
		m.Probe("a", "http", true, d)
	}
	m.Probe("a", "http", false, 0)
	m.Routed("default", "k1", time.Now())

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	res, body := get(t, srv)
	if ct := res.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	fams := parse(t, body)
	for name, typ := range families {
		if f, ok := fams[name]; !ok {
			t.Errorf("no %s", name)
		} else if f.GetType() != typ {
			t.Errorf("%s is a %v, want %v", name, f.GetType(), typ)
		}
	}
	for name := range fams {
		if _, ok := families[name]; !ok {
			t.Errorf("%s was not served before", name)
		}
	}

	for _, v := range odd {
		if got := value(t, fams, "clb_errors_total", map[string]string{"protocol": "sip", "kind": v}); got != 1 {
			t.Errorf("error kind %q: %v", v, got)
		}
		if got := value(t, fams, "clb_requests_total", map[string]string{"protocol": "http", "method": "GET", "instance": v, "outcome": "2xx"}); got != 1 {
			t.Errorf("instance %q: %v", v, got)
		}
	}

	h := fams["clb_health_probe_seconds"].GetMetric()[0].GetHistogram()
	var bounds []float64
	var prev uint64
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() < prev {
			t.Errorf("bucket le=%v: %d after %d", b.GetUpperBound(), b.GetCumulativeCount(), prev)
		}
		prev = b.GetCumulativeCount()
		bounds = append(bounds, b.GetUpperBound())
	}
	if want := append(slices.Clone(probeBuckets), math.Inf(1)); !slices.Equal(bounds, want) {
		t.Errorf("bounds %v, want %v", bounds, want)
	}
	// .0003 s in le=.0005, .001 in le=.001 (inclusive), .04 in le=.05, 3 s only in +Inf.
	for le, want := range map[float64]uint64{.0005: 1, .001: 2, .025: 2, .05: 3, 2.5: 3, math.Inf(1): 4} {
		if got := h.GetBucket()[slices.Index(bounds, le)].GetCumulativeCount(); got != want {
			t.Errorf("le=%v: %d, want %d", le, got, want)
		}
	}
	var sum float64
	for _, d := range took {
		sum += d.Seconds()
	}
	if h.GetSampleCount() != 4 || math.Abs(h.GetSampleSum()-sum) > 1e-9 {
		t.Errorf("count %d sum %v, want 4 and %v", h.GetSampleCount(), h.GetSampleSum(), sum)
	}
	if got := value(t, fams, "promhttp_metric_handler_errors_total", map[string]string{"cause": "gathering"}); got != 0 {
		t.Errorf("%v gathering errors", got)
	}

	res, zipped := get(t, srv, "Accept-Encoding", "br;q=1, gzip;q=0.5")
	if res.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", res.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(zipped))
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if got := parse(t, unzipped); len(got) != len(fams) {
		t.Errorf("gzipped: %d families, plain %d", len(got), len(fams))
	}
	if res, _ := get(t, srv, "Accept-Encoding", "gzip;q=0"); res.Header.Get("Content-Encoding") != "" {
		t.Errorf("gzip refused, but Content-Encoding %q", res.Header.Get("Content-Encoding"))
	}
}

// TestNotUTF8: a label value that is not UTF-8 is written with U+FFFD for
// its bad bytes, so that the scrape still parses, and counted as a
// gathering error; HELP escapes backslash and line feed.
func TestNotUTF8(t *testing.T) {
	m := New(nil)
	m.Error("sip", "bad\xffkind")
	gaugeFunc(m.reg, "clb_test_help", "a \\ backslash\nand a line", func() float64 { return 2 })
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	_, body := get(t, srv)
	if !bytes.Contains(body, []byte("# HELP clb_test_help a \\\\ backslash\\nand a line\n")) {
		t.Errorf("HELP not escaped:\n%s", body)
	}
	fams := parse(t, body)
	if got := value(t, fams, "clb_errors_total", map[string]string{"protocol": "sip", "kind": "bad\uFFFDkind"}); got != 1 {
		t.Errorf("repaired kind: %v", got)
	}
	if got := fams["clb_test_help"].GetHelp(); got != "a \\ backslash\nand a line" {
		t.Errorf("help %q", got)
	}
	if got := value(t, parse(t, func() []byte { _, b := get(t, srv); return b }()), "promhttp_metric_handler_errors_total", map[string]string{"cause": "gathering"}); got < 1 {
		t.Errorf("%v gathering errors after a label value not UTF-8", got)
	}
}

// TestConcurrentScrapes: counting from many goroutines while others scrape
// and the instance list changes (keeping every instance counted), series
// being created all along, is race-free; every scrape parses, no counter goes down from one scrape to
// the next, a histogram's +Inf is its count; the last scrape has every
// count.
func TestConcurrentScrapes(t *testing.T) {
	const workers, rounds = 8, 500
	m := New(nil)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	names := []string{"a", "b", `q"uote`}
	var instances []config.Instance
	for _, n := range names {
		instances = append(instances, config.Instance{Name: n, Weight: 100})
	}
	key := func(s *dto.Metric) string {
		var b strings.Builder
		for _, l := range s.GetLabel() {
			fmt.Fprintf(&b, "%s=%q,", l.GetName(), l.GetValue())
		}
		return b.String()
	}
	scrapeChecked := func(last map[string]float64) map[string]*dto.MetricFamily {
		_, body := get(t, srv)
		fams := parse(t, body)
		for _, name := range []string{"clb_requests_total", "clb_sessions_total", "clb_errors_total", "clb_health_probes_total"} {
			for _, s := range fams[name].GetMetric() {
				k := name + key(s)
				if v := s.GetCounter().GetValue(); v < last[k] {
					t.Errorf("%s went down from %v to %v", k, last[k], v)
				} else {
					last[k] = v
				}
			}
		}
		for _, s := range fams["clb_health_probe_seconds"].GetMetric() {
			h := s.GetHistogram()
			if b := h.GetBucket(); b[len(b)-1].GetCumulativeCount() != h.GetSampleCount() {
				t.Errorf("+Inf %d, count %d", b[len(b)-1].GetCumulativeCount(), h.GetSampleCount())
			}
		}
		return fams
	}

	done := make(chan struct{})
	var scrapers, counters sync.WaitGroup
	for range 2 {
		scrapers.Go(func() {
			last := map[string]float64{}
			for {
				select {
				case <-done:
					return
				default:
				}
				scrapeChecked(last)
				m.SetInstances(instances)
			}
		})
	}
	for w := range workers {
		counters.Go(func() {
			for i := range rounds {
				inst := names[(w+i)%len(names)]
				m.Request("sip", "INVITE", inst, "forwarded")
				m.Session("sip", inst)
				m.Error("sip", fmt.Sprint("kind", w*rounds+i)) // series created as scrapes run
				m.Probe(inst, "sip", true, time.Millisecond)
			}
		})
	}
	counters.Wait()
	close(done)
	scrapers.Wait()

	fams := scrapeChecked(map[string]float64{})
	var requests, sessions, probes float64
	for _, n := range names {
		requests += value(t, fams, "clb_requests_total", map[string]string{"protocol": "sip", "method": "INVITE", "instance": n, "outcome": "forwarded"})
		sessions += value(t, fams, "clb_sessions_total", map[string]string{"protocol": "sip", "instance": n})
		probes += value(t, fams, "clb_health_probe_seconds", map[string]string{"instance": n, "protocol": "sip"})
		if c := m.Instance(n); c.Requests.Load() != c.Sessions.Load() || c.Requests.Load() == 0 {
			t.Errorf("%s: %d requests, %d sessions", n, c.Requests.Load(), c.Sessions.Load())
		}
	}
	const want = workers * rounds
	if requests != want || sessions != want || probes != want {
		t.Errorf("requests %v sessions %v probes %v, want %d each", requests, sessions, probes, want)
	}
	if got := len(fams["clb_errors_total"].GetMetric()); got != want {
		t.Errorf("%d error series, want %d", got, want)
	}
}

// TestRuntimeMetrics: the Go runtime's and the process's metrics follow
// what they measure: goroutines and open files started show, the heap
// holds what is kept, the limit on files is the process's, collections
// are counted, the process started before now.
func TestRuntimeMetrics(t *testing.T) {
	m := New(nil)
	one := func(fams map[string]*dto.MetricFamily, name string) float64 {
		return value(t, fams, name, map[string]string{})
	}

	before := scrape(t, m)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() { <-stop })
	}
	files := openFiles(t, 50)
	kept := make([]byte, 64<<20)
	for i := range kept {
		kept[i] = 1 // resident, not only allocated
	}
	runtime.GC()
	runtime.GC()
	after := scrape(t, m)
	close(stop)
	wg.Wait()
	closeFiles(files)

	// A scrape's server and connections come and go: a few either way.
	if d := one(after, "go_goroutines") - one(before, "go_goroutines"); d < 90 || d > 110 {
		t.Errorf("go_goroutines rose by %v with 100 more", d)
	}
	if d := one(after, "process_open_fds") - one(before, "process_open_fds"); d < 45 || d > 55 {
		t.Errorf("process_open_fds rose by %v with 50 files opened", d)
	}
	if v := one(after, "go_memstats_heap_alloc_bytes"); v < float64(len(kept)) {
		t.Errorf("go_memstats_heap_alloc_bytes %v with %d bytes kept", v, len(kept))
	}
	if v := one(after, "process_resident_memory_bytes"); v < float64(len(kept)) {
		t.Errorf("process_resident_memory_bytes %v with %d bytes written", v, len(kept))
	}
	if v, heap := one(after, "go_memstats_heap_sys_bytes"), one(after, "go_memstats_heap_inuse_bytes")+one(after, "go_memstats_heap_idle_bytes"); v != heap {
		t.Errorf("heap_sys %v, inuse+idle %v", v, heap)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if v := one(after, "process_max_fds"); v != float64(lim.Cur) {
		t.Errorf("process_max_fds %v, rlimit %d", v, lim.Cur)
	}
	gc := after["go_gc_duration_seconds"].GetMetric()[0].GetSummary()
	if gc.GetSampleCount() < before["go_gc_duration_seconds"].GetMetric()[0].GetSummary().GetSampleCount()+2 {
		t.Errorf("go_gc_duration_seconds_count %d after two collections", gc.GetSampleCount())
	}
	var qs []float64
	for _, q := range gc.GetQuantile() {
		qs = append(qs, q.GetQuantile())
	}
	if !slices.Equal(qs, []float64{0, .25, .5, .75, 1}) {
		t.Errorf("quantiles %v", qs)
	}
	if v := one(after, "go_memstats_last_gc_time_seconds"); time.Since(time.Unix(0, int64(v*1e9))) > time.Minute {
		t.Errorf("last GC at %v", v)
	}
	if v := one(after, "process_start_time_seconds"); v > float64(time.Now().Unix())+1 || v < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("process_start_time_seconds %v", v)
	}
	if v := value(t, after, "go_info", map[string]string{"version": runtime.Version()}); v != 1 {
		t.Errorf("go_info %v", v)
	}
	if v := one(after, "go_sched_gomaxprocs_threads"); v != float64(runtime.GOMAXPROCS(0)) {
		t.Errorf("go_sched_gomaxprocs_threads %v", v)
	}
	runtime.KeepAlive(kept)
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"gzip": true, "deflate, GZIP": true, "gzip;q=0.3": true, "gzip; q=0": false,
		"gzip;q=0.0": false, "br": false, "": false, "xgzip": false,
	} {
		if got := acceptsGzip([]string{header}); got != want {
			t.Errorf("%q: %v", header, got)
		}
	}
}

// openFiles opens n descriptors (of os.DevNull), closed at the test's end
// if closeFiles has not closed them before.
func openFiles(t *testing.T, n int) []*os.File {
	t.Helper()
	var files []*os.File
	t.Cleanup(func() { closeFiles(files) })
	for range n {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close() // a second Close only errs
	}
}
