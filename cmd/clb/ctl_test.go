package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"clb/admin"
)

// TestCtl drives a running clb (a clb run process) with every verb of clb
// ctl, in tables and in -json, with the token from -token and $CLB_TOKEN,
// and checks the exit codes and the API's error messages.
func TestCtl(t *testing.T) {
	head := "listen: {http: 127.0.0.1:0, admin: 127.0.0.1:0}\nadmin: {token: s3cret}\nhealth: {active: false}\ninstances:\n"
	three := "  - {name: a, http: http://127.0.0.1:1}\n  - {name: b, http: http://127.0.0.1:2}\n  - {name: c, http: http://127.0.0.1:3}\n"
	path := writeFile(t, head+three)
	p := startCLB(t, path)
	addr := p.started["admin"].(string)
	ctl := func(args ...string) (int, string, string) {
		t.Helper()
		return clb(t, "", append([]string{"ctl", "-admin", addr, "-token", "s3cret"}, args...)...)
	}
	ok := func(args ...string) string {
		t.Helper()
		code, out, errOut := ctl(args...)
		if code != 0 || errOut != "" {
			t.Fatalf("clb ctl %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	asJSON := func(v any, args ...string) {
		t.Helper()
		out := ok(append([]string{"-json"}, args...)...)
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("clb ctl -json %s: %v in %s", strings.Join(args, " "), err, out)
		}
	}

	states := func() string {
		t.Helper()
		var st admin.Status
		asJSON(&st, "status", "-interval", "0")
		var s []string
		for _, i := range st.Instances {
			s = append(s, i.Name+":"+i.State)
		}
		return strings.Join(s, " ")
	}

	// The token: none is 401, as the API says it; $CLB_TOKEN is one.
	code, _, errOut := clb(t, "", "ctl", "-admin", addr, "status", "-interval", "0")
	if code != 1 || !strings.Contains(errOut, "401 Unauthorized: a bearer token is required") {
		t.Errorf("no token: exit %d, stderr %q", code, errOut)
	}
	t.Setenv("CLB_TOKEN", "s3cret")
	if code, out, errOut := clb(t, "", "ctl", "-admin", "http://"+addr+"/", "instances"); code != 0 || !strings.Contains(out, "http://127.0.0.1:2") {
		t.Errorf("token from $CLB_TOKEN: exit %d, %q %q", code, out, errOut)
	}

	out := ok("status", "-interval", "20ms")
	for _, want := range []string{"NAME", "STATE", "LOAD", "SHARE", "HEALTH", "REQ/S", "a ", "up", "1.00", "0.0", "table version 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	var st struct {
		Version   uint64
		Instances []struct {
			Name              string
			State             string
			Share             float64
			RequestsPerSecond *float64 `json:"requests_per_second"`
		}
	}
	asJSON(&st, "status", "-interval", "20ms")
	if len(st.Instances) != 3 || st.Instances[1].Name != "b" || st.Instances[1].RequestsPerSecond == nil || st.Instances[0].Share == 0 {
		t.Errorf("status -json: %+v", st)
	}

	var inst struct{ Instances []admin.InstanceAddrs }
	asJSON(&inst, "instances")
	if len(inst.Instances) != 3 || inst.Instances[2] != (admin.InstanceAddrs{Name: "c", HTTP: "http://127.0.0.1:3"}) {
		t.Errorf("instances -json: %+v", inst)
	}

	var r admin.Route
	asJSON(&r, "route", "alice")
	if r.Key != "alice" || r.Owner == "" || r.Replica == "" || len(r.Preference) != 3 || r.Preference[0] != r.Owner {
		t.Errorf("route -json: %+v", r)
	}
	out = ok("route", "-n", "2", "alice")
	for _, want := range []string{"owner       " + r.Owner, "replica     " + r.Replica, "preference  " + strings.Join(r.Preference[:2], " ") + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("route lacks %q:\n%s", want, out)
		}
	}

	// What-if: removing the owner of alice moves a third of the keys, all
	// to their replica partners; nothing changes.
	var wi admin.WhatIf
	asJSON(&wi, "whatif", "-remove", r.Owner)
	if wi.Moved < 0.3 || wi.ToReplica != wi.Moved || wi.Unsafe != 0 || len(wi.Moves) != 2 || wi.Moves[0].From != r.Owner {
		t.Errorf("whatif -remove %s: %+v", r.Owner, wi)
	}
	out = ok("whatif", "-add", "d:100", "-remove", "b")
	for _, want := range []string{"remove b, add d (weight 100): ", "FROM", "SHARE NOW", "nothing was changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("whatif lacks %q:\n%s", want, out)
		}
	}
	out = ok("whatif")
	for _, want := range []string{"DRAIN  MOVES  TO REPLICA  UNSAFE  WHERE TO\n", "\na      33.3%  33.3%       0.0%    "} {
		if !strings.Contains(out, want) {
			t.Errorf("whatif (drains) lacks %q:\n%s", want, out)
		}
	}
	if got := states(); got != "a:up b:up c:up" {
		t.Errorf("after the what-ifs: %s", got)
	}

	// enable, disable, drain.
	if out := ok("drain", "b"); !strings.HasPrefix(out, "b: draining, load factor 0.90, next step at ") {
		t.Errorf("drain: %q", out)
	}
	var is admin.InstanceStatus
	asJSON(&is, "disable", "b")
	if is.Name != "b" || is.State != "disabled" {
		t.Errorf("disable -json: %+v", is)
	}
	if out := ok("enable", "b"); !strings.HasPrefix(out, "b: ramping, load factor 0.10") {
		t.Errorf("enable: %q", out)
	}
	if got := states(); got != "a:up b:ramping c:up" {
		t.Errorf("after enable: %s", got)
	}

	// An error of the API: its message and exit 1; -json prints its answer.
	code, out, errOut = ctl("-json", "drain", "zz")
	var e struct{ Error string }
	if code != 1 || errOut != "clb ctl: 404 Not Found: unknown instance \"zz\"\n" || json.Unmarshal([]byte(out), &e) != nil || e.Error != `unknown instance "zz"` {
		t.Errorf("drain zz: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, _, errOut = ctl("whatif", "-add", "x")
	if code != 1 || !strings.Contains(errOut, `400 Bad Request: add: "x": want NAME:WEIGHT`) {
		t.Errorf("whatif -add x: exit %d, stderr %q", code, errOut)
	}

	// reload: the file grows an instance; then a bad file is refused.
	if err := os.WriteFile(path, []byte(head+three+"  - {name: d, http: http://127.0.0.1:4}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := ok("reload"); out != "reloaded: 4 instances; added d; removed -\n" {
		t.Errorf("reload: %q", out)
	}
	if err := os.WriteFile(path, []byte(head+"  - {name: a, weight: -1, http: http://127.0.0.1:1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = ctl("reload")
	if code != 1 || !strings.Contains(errOut, "422 Unprocessable Entity: ") || !strings.Contains(errOut, "instances[0].weight") {
		t.Errorf("bad reload: exit %d, stderr %q", code, errOut)
	}

	// The command line: 2; no clb: 3.
	for _, args := range [][]string{{"frob"}, {"route"}, {"drain", "a", "b"}, {"status", "-bogus"}, {}} {
		if code, _, _ := ctl(args...); code != 2 {
			t.Errorf("clb ctl %q: exit %d, want 2", args, code)
		}
	}
	if code, _, errOut := clb(t, "", "ctl", "-admin", "127.0.0.1:1", "status"); code != 3 || !strings.Contains(errOut, "connection refused") {
		t.Errorf("no clb: exit %d, stderr %q", code, errOut)
	}
}

// TestCtlSendsAdminHeader: every state-changing call carries X-CLB-Admin: 1
// (which no cross-site page can send without a preflight), with the token.
func TestCtlSendsAdminHeader(t *testing.T) {
	type seen struct{ method, path, header, auth string }
	calls := make(chan seen, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls <- seen{r.Method, r.URL.Path, r.Header.Get("X-CLB-Admin"), r.Header.Get("Authorization")}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/reload":
			fmt.Fprint(w, `{"instances": 1, "added": [], "removed": []}`)
		case "/api/v1/instances":
			fmt.Fprint(w, `{"instances": []}`)
		default:
			fmt.Fprint(w, `{"name": "a", "state": "draining", "load_factor": 0.9}`)
		}
	}))
	defer srv.Close()
	for _, verb := range [][]string{{"drain", "a"}, {"enable", "a"}, {"disable", "a"}, {"reload"}, {"instances"}} {
		if code, _, errOut := clb(t, "", append([]string{"ctl", "-admin", srv.URL, "-token", "T"}, verb...)...); code != 0 {
			t.Fatalf("%v: exit %d %s", verb, code, errOut)
		}
		c := <-calls
		want := "1"
		if c.method == "GET" {
			want = ""
		}
		if c.header != want || c.auth != "Bearer T" {
			t.Errorf("%s %s: X-CLB-Admin %q, Authorization %q", c.method, c.path, c.header, c.auth)
		}
	}
	// An answer that is not the admin API's: clb is not there (3).
	notAPI := httptest.NewServer(http.NotFoundHandler())
	defer notAPI.Close()
	if code, _, errOut := clb(t, "", "ctl", "-admin", notAPI.URL, "instances"); code != 3 || !strings.Contains(errOut, "not an answer of clb's admin API") {
		t.Errorf("not the API: exit %d, %q", code, errOut)
	}
}

// TestCtlAddressFromConfig: -config gives the admin address (an
// unspecified host is this host) and the token; the flags win over it.
func TestCtlAddressFromConfig(t *testing.T) {
	path := writeFile(t, "listen: {http: 127.0.0.1:0, admin: 0.0.0.0:9999}\nadmin: {token: fromfile}\ninstances:\n  - {name: a, http: http://127.0.0.1:1}\n")
	t.Setenv("CLB_TOKEN", "")
	for _, tc := range []struct {
		name      string
		flags     ctlFlags
		base, tok string
	}{
		{name: "default", flags: ctlFlags{}, base: "http://127.0.0.1:9090"},
		{name: "config", flags: ctlFlags{config: path}, base: "http://127.0.0.1:9999", tok: "fromfile"},
		{name: "flags win", flags: ctlFlags{config: path, admin: "https://h:1/", token: "t"}, base: "https://h:1", tok: "t"},
	} {
		c, err := newCtlClient(tc.flags)
		if err != nil || c.base != tc.base || c.token != tc.tok {
			t.Errorf("%s: %+v %v, want %s %q", tc.name, c, err, tc.base, tc.tok)
		}
	}
	if _, err := newCtlClient(ctlFlags{admin: "ftp://x"}); err == nil {
		t.Error("ftp://x accepted")
	}
}
