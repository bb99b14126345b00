package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"clb/balancer"
	"clb/config"
	"clb/health"
	"clb/loadfactor"
	"clb/metrics"
)

func instances() []config.Instance {
	mk := func(name string, port int, sip, web bool) config.Instance {
		in := config.Instance{Name: name, Weight: 100}
		if sip {
			in.SIP = config.SIPAddr{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1", Port: 5070 + port}}
		}
		if web {
			in.HTTP = config.HTTPAddr{Endpoint: config.Endpoint{Transport: "http", Host: "127.0.0.1", Port: 8080 + port}}
		}
		return in
	}
	return []config.Instance{mk("a", 1, true, true), mk("b", 2, true, false), mk("c", 3, false, true)}
}

type fixture struct {
	t    *testing.T
	bal  *balancer.Balancer
	m    *metrics.Metrics
	srv  *Server
	base string
	tok  string
}

// start runs an admin Server on a free loopback port until the test ends.
func start(t *testing.T, o Options) *fixture {
	t.Helper()
	return startWith(t, o, nil)
}

// startWith is start, with setup applied to the server before it serves.
func startWith(t *testing.T, o Options, setup func(*Server)) *fixture {
	t.Helper()
	if o.Balancer == nil {
		bal, err := balancer.New(instances(), loadfactor.Params{Start: 0.25, Increase: 0.25, Period: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		o.Balancer = bal
	}
	if o.Metrics == nil {
		bal := o.Balancer
		o.Metrics = metrics.New(func() *balancer.Balancer { return bal })
	}
	if o.Health == nil {
		o.Health = health.New(o.Balancer, o.Metrics, nil, nil)
		o.Health.Update(config.Defaults().Health, instances())
	}
	srv, err := NewServer("127.0.0.1:0", o)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return &fixture{t: t, bal: o.Balancer, m: o.Metrics, srv: srv, base: "http://" + srv.Addr(), tok: o.Token}
}

// call makes a request and decodes a JSON answer into out (if not nil); it
// returns the status code and the body.
func (f *fixture) call(method, path string, out any) (int, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.base+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if f.tok != "" {
		req.Header.Set("Authorization", "Bearer "+f.tok)
	}
	if method == "POST" {
		req.Header.Set(AdminHeader, "1")
	}
	client := http.Client{Timeout: 20 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	if out != nil && res.StatusCode < 300 {
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			f.t.Fatalf("%s %s: Content-Type %q", method, path, ct)
		}
		if err := json.Unmarshal(body, out); err != nil {
			f.t.Fatalf("%s %s: %v in %s", method, path, err, body)
		}
	}
	return res.StatusCode, string(body)
}

func (f *fixture) status() Status {
	var st Status
	if code, body := f.call("GET", "/api/v1/status", &st); code != 200 {
		f.t.Fatalf("status: %d %s", code, body)
	}
	return st
}

func byName(st Status, name string) InstanceStatus {
	for _, i := range st.Instances {
		if i.Name == name {
			return i
		}
	}
	return InstanceStatus{}
}

func TestStatus(t *testing.T) {
	f := start(t, Options{})
	f.m.Request("sip", "INVITE", "a", "forwarded")
	f.m.Request("http", "GET", "a", "2xx")
	f.m.Session("sip", "a")
	f.m.Request("http", "GET", "c", "2xx")
	f.m.Request("http", "GET", "", "refused")

	st := f.status()
	if len(st.Instances) != 3 || st.Version == 0 || st.Time.IsZero() {
		t.Fatalf("status %+v", st)
	}
	var share, full float64
	for k, want := range []string{"a", "b", "c"} {
		i := st.Instances[k]
		if i.Name != want || i.State != "up" || i.LoadFactor != 1 || i.Weight != 100 || i.NextStep != nil {
			t.Errorf("instance %d: %+v", k, i)
		}
		if i.Health == nil || !i.Health.Up || i.Health.LastProbe != nil || i.Health.History == nil {
			t.Errorf("%s health %+v", i.Name, i.Health)
		}
		// Three equal weights: a third each, sampled and exact.
		if math.Abs(i.Share-1.0/3) > 0.02 || math.Abs(i.FullShare-1.0/3) > 0.02 {
			t.Errorf("%s share %.3f full %.3f", i.Name, i.Share, i.FullShare)
		}
		share += i.Share
		full += i.FullShare
	}
	if math.Abs(share-1) > 1e-9 || math.Abs(full-1) > 1e-9 {
		t.Errorf("shares sum to %v and %v", share, full)
	}
	a := byName(st, "a")
	if a.Requests != 2 || a.Sessions != 1 || a.SIP != "udp://127.0.0.1:5071" || a.HTTP != "http://127.0.0.1:8081" {
		t.Errorf("a: %+v", a)
	}
	if c := byName(st, "c"); c.Requests != 1 || c.SIP != "" {
		t.Errorf("c: %+v", c)
	}

	// Disabling b gives its share to the others; its factor is 0.
	if code, body := f.call("POST", "/api/v1/instances/b/disable", nil); code != 200 {
		t.Fatalf("disable: %d %s", code, body)
	}
	st2 := f.status()
	if st2.Version <= st.Version {
		t.Errorf("version %d after %d", st2.Version, st.Version)
	}
	if b := byName(st2, "b"); b.State != "disabled" || b.LoadFactor != 0 || b.Share != 0 || b.FullShare == 0 {
		t.Errorf("disabled b: %+v", b)
	}
	if a := byName(st2, "a"); math.Abs(a.Share-0.5) > 0.03 {
		t.Errorf("a's share with b out: %.3f", a.Share)
	}
}

func TestInstances(t *testing.T) {
	f := start(t, Options{})
	var out struct{ Instances []map[string]string }
	if code, body := f.call("GET", "/api/v1/instances", &out); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	want := []map[string]string{
		{"name": "a", "sip": "udp://127.0.0.1:5071", "http": "http://127.0.0.1:8081"},
		{"name": "b", "sip": "udp://127.0.0.1:5072"},
		{"name": "c", "http": "http://127.0.0.1:8083"},
	}
	if fmt.Sprint(out.Instances) != fmt.Sprint(want) {
		t.Errorf("instances %v, want %v", out.Instances, want)
	}
}

func TestRoute(t *testing.T) {
	f := start(t, Options{})
	for _, key := range []string{"alice", "bob", "a b/c?d=e", "ünïcode", ""} {
		var r Route
		path := "/api/v1/route?key=" + urlQuery(key)
		if code, body := f.call("GET", path, &r); code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		d := f.bal.Route(key, "", time.Now())
		pref := f.bal.Table().PreferenceList(nil, key, 3)
		if r.Key != key || r.Owner != d.Owner.Name || r.Replica != d.Replica.Name || fmt.Sprint(r.Preference) != fmt.Sprint(pref) {
			t.Errorf("%q: %+v, want owner %s replica %s preference %v", key, r, d.Owner.Name, d.Replica.Name, pref)
		}
	}
	// protocol picks among the instances that speak it; n bounds the list.
	var r Route
	f.call("GET", "/api/v1/route?key=k1&protocol=http&n=1", &r)
	if r.Owner == "b" || r.Replica == "b" || len(r.Preference) != 1 {
		t.Errorf("http route %+v: b speaks no HTTP", r)
	}
	for _, bad := range []string{"", "?n=2", "?key=k&n=0", "?key=k&n=x", "?key=k&protocol=smtp"} {
		if code, body := f.call("GET", "/api/v1/route"+bad, nil); code != 400 || !strings.Contains(body, `"error"`) {
			t.Errorf("route%s: %d %s", bad, code, body)
		}
	}
	// With every instance out there is no owner, and the answer says so.
	for _, n := range []string{"a", "b", "c"} {
		f.call("POST", "/api/v1/instances/"+n+"/disable", nil)
	}
	r = Route{}
	f.call("GET", "/api/v1/route?key=k1", &r)
	if r.Owner != "" || r.Replica != "" || len(r.Preference) != 3 {
		t.Errorf("all out: %+v", r)
	}
}

func urlQuery(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func TestActions(t *testing.T) {
	f := start(t, Options{})
	steps := []struct {
		path, state string
		factor      float64
	}{
		{"/api/v1/instances/a/drain", "draining", 0.75}, // the first step down is at once
		{"/api/v1/instances/a/enable", "ramping", 0.75}, // up again from where it was
		{"/api/v1/instances/a/disable", "disabled", 0},
		{"/api/v1/instances/a/disable", "disabled", 0}, // again: no change
		{"/api/v1/instances/a/enable", "ramping", 0.25},
	}
	for _, s := range steps {
		var is InstanceStatus
		if code, body := f.call("POST", s.path, &is); code != 200 {
			t.Fatalf("%s: %d %s", s.path, code, body)
		}
		if is.Name != "a" || is.State != s.state || is.LoadFactor != s.factor {
			t.Errorf("%s: %+v, want %s at %v", s.path, is, s.state, s.factor)
		}
		if s.state == "ramping" && s.factor < 1 && is.NextStep == nil {
			t.Errorf("%s: ramping without a next step", s.path)
		}
	}
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"POST", "/api/v1/instances/zz/drain", 404},
		{"POST", "/api/v1/instances/a/restart", 404},
		{"GET", "/api/v1/instances/a/drain", 405},
		{"POST", "/api/v1/status", 405},
		{"GET", "/api/v1/nothing", 404},
	} {
		if code, body := f.call(c.method, c.path, nil); code != c.code {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, code, body, c.code)
		}
	}
}

func TestLongPoll(t *testing.T) {
	waiting := make(chan struct{}, 1)
	f := startWith(t, Options{}, func(s *Server) { s.waiting = func() { waiting <- struct{}{} } })
	v := f.status().Version

	// No change: the poll answers after its wait with the same version.
	var st Status
	began := time.Now()
	f.call("GET", fmt.Sprintf("/api/v1/status?wait=50ms&version=%d", v), &st)
	if st.Version != v {
		t.Fatalf("version %d, want %d", st.Version, v)
	}
	if took := time.Since(began); took < 50*time.Millisecond {
		t.Errorf("the poll answered after %v, before its wait of 50ms", took)
	}
	<-waiting
	// A version other than the current one answers at once.
	f.call("GET", fmt.Sprintf("/api/v1/status?wait=1m&version=%d", v+7), &st)

	// A change ends the poll: b drained once the poll waits.
	got := make(chan Status, 1)
	failed := make(chan error, 1)
	go func() {
		res, err := http.Get(fmt.Sprintf("%s/api/v1/status?wait=1m&version=%d", f.base, v))
		if err != nil {
			failed <- err
			return
		}
		defer res.Body.Close()
		var st Status
		if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
			failed <- err
			return
		}
		got <- st
	}()
	select {
	case <-waiting:
	case err := <-failed:
		t.Fatal(err)
	}
	if err := f.bal.Drain("b", time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-got:
		if st.Version <= v || byName(st, "b").State != "draining" {
			t.Errorf("after drain: version %d, b %+v", st.Version, byName(st, "b"))
		}
	case err := <-failed:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatal("the long poll did not end with the change")
	}
	for _, bad := range []string{"?wait=soon", "?wait=-1s", "?wait=1s&version=x"} {
		if code, _ := f.call("GET", "/api/v1/status"+bad, nil); code != 400 {
			t.Errorf("status%s: %d", bad, code)
		}
	}
}

func TestReload(t *testing.T) {
	calls := 0
	f := start(t, Options{Reload: func() (Reloaded, error) {
		calls++
		if calls == 1 {
			return Reloaded{}, errors.New("clb.yaml:4: instances[0].name: repeated")
		}
		return Reloaded{Instances: 3, Added: []string{"d"}, Removed: []string{"a"}}, nil
	}})
	code, body := f.call("POST", "/api/v1/reload", nil)
	if code != 422 || !strings.Contains(body, "clb.yaml:4: instances[0].name: repeated") {
		t.Errorf("refused reload: %d %s", code, body)
	}
	var r Reloaded
	if code, body := f.call("POST", "/api/v1/reload", &r); code != 200 || r.Instances != 3 || r.Added[0] != "d" || r.Removed[0] != "a" {
		t.Errorf("reload: %d %s", code, body)
	}
	g := start(t, Options{})
	if code, _ := g.call("POST", "/api/v1/reload", nil); code != 501 {
		t.Errorf("reload without a file: %d", code)
	}
}

// TestToken: with a token every API call and /metrics need it; the status
// page itself does not (it holds no data).
func TestToken(t *testing.T) {
	f := start(t, Options{Token: "s3cret"})
	paths := []string{"/api/v1/status", "/api/v1/instances", "/api/v1/route?key=k", "/metrics"}
	for _, tok := range []string{"", "wrong", "s3cret"} {
		f.tok = tok
		for _, p := range paths {
			code, _ := f.call("GET", p, nil)
			if want := map[bool]int{true: 200, false: 401}[tok == "s3cret"]; code != want {
				t.Errorf("token %q GET %s: %d, want %d", tok, p, code, want)
			}
		}
		code, _ := f.call("POST", "/api/v1/instances/a/drain", nil)
		if want := map[bool]int{true: 200, false: 401}[tok == "s3cret"]; code != want {
			t.Errorf("token %q drain: %d, want %d", tok, code, want)
		}
	}
	// A token given another way (no Bearer prefix) is refused.
	req, _ := http.NewRequest("GET", f.base+"/api/v1/status", nil)
	req.Header.Set("Authorization", "s3cret")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("token without Bearer: %d %v", res.StatusCode, res.Header)
	}
	f.tok = ""
	if code, body := f.call("GET", "/", nil); code != 200 || !strings.Contains(body, "<title>clb status</title>") {
		t.Errorf("status page: %d", code)
	}
	// A reload may change the token.
	f.srv.SetToken("new")
	f.tok = "new"
	if code, _ := f.call("GET", "/api/v1/status", nil); code != 200 {
		t.Errorf("new token: %d", code)
	}
}

func TestPageIsSelfContained(t *testing.T) {
	f := start(t, Options{})
	res, err := http.Get(f.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	page := string(body)
	// No external assets: nothing is loaded from another origin.
	for _, ref := range []string{"http://", "https://", "src=\"/", "href=\"/", "@import"} {
		if strings.Contains(page, ref) {
			t.Errorf("the page refers to %q", ref)
		}
	}
	if !strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("CSP %q", res.Header.Get("Content-Security-Policy"))
	}
}
