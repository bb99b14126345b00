package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"clb/browsertest"
	"clb/certs/certstest"
	"clb/instance"
)

// The npm packages of the browser phone, pinned: JsSIP is CommonJS, so
// esbuild bundles it for the page.
const (
	jssipVersion   = "3.13.8"
	esbuildVersion = "0.28.2"
)

// jssipBundle is JsSIP bundled for a page (window.JsSIP), built once with
// npm and esbuild in a cache directory outside the repository
// ($CLB_NPM_CACHE, else the user's cache directory) and kept there. Without
// npm, or when the registry cannot be reached, the test skips; under
// CLB_REQUIRE_BROWSER it fails.
func jssipBundle(t *testing.T) string {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CLB_REQUIRE_BROWSER") != "" {
			t.Fatalf("CLB_REQUIRE_BROWSER is set: "+format, args...)
		}
		t.Skipf(format, args...)
	}
	dir := os.Getenv("CLB_NPM_CACHE")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			fail("no cache directory for the npm packages: %v", err)
		}
		dir = filepath.Join(cache, "clb-browser-phone")
	}
	bundle := filepath.Join(dir, "jssip-"+jssipVersion+".js")
	if _, err := os.Stat(bundle); err == nil {
		return bundle
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		fail("npm is not installed (apt-get install npm): %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, npm, "install", "--prefix", dir, "--no-audit", "--no-fund", "--no-save",
		"jssip@"+jssipVersion, "esbuild@"+esbuildVersion)
	if out, err := install.CombinedOutput(); err != nil {
		fail("npm install jssip esbuild: %v\n%s", err, out)
	}
	entry := filepath.Join(dir, "entry.js")
	if err := os.WriteFile(entry, []byte(`window.JsSIP = require("jssip");`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := fmt.Sprintf("%s.%d", bundle, os.Getpid())
	build := exec.CommandContext(ctx, filepath.Join(dir, "node_modules", ".bin", "esbuild"), entry,
		"--bundle", "--format=iife", "--log-level=warning", "--outfile="+tmp)
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("esbuild: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bundle); err != nil {
		t.Fatal(err)
	}
	return bundle
}

// phonePage is the browser phone: JsSIP over clb's wss:// listener. Every
// event it hears is a list item (so that the test's WaitFor, a
// MutationObserver, sees it) and an entry of window.events.
const phonePage = `<!doctype html><meta charset="utf-8"><title>clb browser phone</title>
<script src="/jssip.js"></script><ul id="events"></ul>
<script>
window.events = [];
function note(e) { window.events.push(e); const li = document.createElement("li"); li.textContent = e; document.getElementById("events").append(li); }
window.onerror = (m) => note("error:" + m);
const ua = new JsSIP.UA({sockets: [new JsSIP.WebSocketInterface(WSS)], uri: "sip:alice@example.com",
  register: true, session_timers: false, user_agent: "clb browser phone test"});
ua.on("registered", () => note("registered"));
ua.on("registrationFailed", (e) => note("registrationFailed:" + e.cause));
ua.on("disconnected", () => note("disconnected"));
window.sessions = {};
window.call = (n) => {
  const s = ua.call("sip:service@example.com", {
    mediaConstraints: {audio: true, video: false}, pcConfig: {iceServers: []},
    eventHandlers: {
      accepted: (e) => note(n + ":accepted:" + e.response.getHeaders("record-route").join(" | ")),
      confirmed: () => note(n + ":confirmed"),
      ended: (e) => note(n + ":ended:" + e.originator + ":" + e.cause + (e.message ? ":" + e.message.method + " via " + e.message.getHeader("via") : "")),
      failed: (e) => note(n + ":failed:" + e.originator + ":" + e.cause),
    }});
  window.sessions[n] = s;
  return true;
};
// Calls to the phone (by the Path of its registration) are answered.
let incoming = 0;
ua.on("newRTCSession", (e) => {
  if (e.originator !== "remote") return;
  const n = "in" + (++incoming), s = e.session;
  window.sessions[n] = s;
  note(n + ":incoming:" + e.request.getHeaders("record-route").join(" | "));
  s.on("confirmed", () => note(n + ":confirmed"));
  s.on("ended", (e) => note(n + ":ended:" + e.originator + ":" + e.cause + (e.message ? ":" + e.message.method + " via " + e.message.getHeader("via") : "")));
  s.on("failed", (e) => note(n + ":failed:" + e.originator + ":" + e.cause));
  s.answer({mediaConstraints: {audio: true, video: false}, pcConfig: {iceServers: []}});
});
ua.start();
</script>`

// TestBrowserPhone is the browser proof of SIP over WebSocket: JsSIP in
// headless Chromium registers over wss:// through clb run (its page's
// Origin in ws.origins) and calls clb-instance, which clb reaches over
// UDP; the instance's SDP answer is taken, the call is confirmed (200,
// ACK); the instance hangs up and its BYE reaches the browser over its
// WebSocket by the flow token of clb's double Record-Route; a second call
// is ended by the browser, and its BYE reaches the instance. Then the
// instance calls the browser by the Path clb put in its REGISTER: the
// browser answers, the call is confirmed by the instance's ACK, and is
// ended once by the instance and once by the browser.
func TestBrowserPhone(t *testing.T) {
	bundle := jssipBundle(t)
	w := browsertest.Start(t, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--ignore-certificate-errors")

	in, err := instance.New(instance.Options{Name: "a", SIP: "127.0.0.1:0", HTTP: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- in.Serve(ctx) }()
	defer func() { cancel(); <-served }()

	wssURL := make(chan string, 1)
	page := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			rw.Header().Set("Content-Type", "text/html")
			fmt.Fprint(rw, strings.Replace(phonePage, "WSS", fmt.Sprintf("%q", <-wssURL), 1))
		case "/jssip.js":
			http.ServeFile(rw, r, bundle)
		default:
			http.NotFound(rw, r)
		}
	}))
	defer page.Close()

	dir := t.TempDir()
	cert, key := certstest.NewCA(t, "test CA").Issue(t, certstest.Leaf{Name: "clb"}).Write(t, dir, "clb")
	path := writeFile(t, fmt.Sprintf(`listen:
  sip: [udp://127.0.0.1:0, wss://127.0.0.1:0/sip]
tls: {cert: %s, key: %s, flow_key: "a flow key of the browser phone test, 32+ characters"}
ws: {origins: [%s]}
instances:
  - {name: a, sip: %s, http: %s}
`, cert, key, page.URL, in.SIPAddr(), in.HTTPAddr()))
	p := startCLB(t, path)
	defer func() {
		p.signal(syscall.SIGTERM)
		p.log("clb stopped")
		if err := p.exit(); err != nil {
			t.Errorf("clb exit: %v", err)
		}
	}()
	var wss string
	for _, l := range p.started["sip"].([]any) {
		if s := l.(string); strings.HasPrefix(s, "wss://") {
			wss = s + "/sip"
		}
	}
	wssURL <- wss

	w.Do("POST", "/url", map[string]string{"url": page.URL + "/"}, nil)
	events := func() string {
		var v []string
		w.Do("POST", "/execute/sync", map[string]any{"script": "return window.events", "args": []any{}}, &v)
		return strings.Join(v, "\n")
	}
	// until waits for an event starting with one of want, failing with
	// every event so far on any other outcome.
	until := func(want string, or ...string) string {
		t.Helper()
		cond := make([]string, 0, len(or)+1)
		for _, e := range append([]string{want}, or...) {
			cond = append(cond, fmt.Sprintf("e.startsWith(%q)", e))
		}
		got := w.WaitFor(fmt.Sprintf(`window.events && window.events.find(e => %s)`, strings.Join(cond, " || ")))
		if !strings.HasPrefix(got, want) {
			t.Fatalf("want %s, got %s; events:\n%s", want, got, events())
		}
		return got
	}
	until("registered", "registrationFailed", "error", "disconnected")

	// Call 1, ended by the instance.
	w.Do("POST", "/execute/sync", map[string]any{"script": "return window.call(1)", "args": []any{}}, nil)
	accepted := until("1:accepted", "1:failed", "error")
	for _, want := range []string{"transport=udp", "transport=wss", ";flow="} {
		if !strings.Contains(accepted, want) {
			t.Errorf("the 200's Record-Route at the browser lacks %s: %s", want, accepted)
		}
	}
	until("1:confirmed", "1:failed", "1:ended", "error")
	if calls := in.Calls(); len(calls) != 1 {
		t.Fatalf("the instance has calls %v, want the browser's", calls)
	}
	res, err := http.Post(in.HTTPAddr()+"/_clb/hangup", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var status map[string]int
	_ = json.NewDecoder(res.Body).Decode(&status)
	res.Body.Close()
	if res.StatusCode != 200 || len(status) != 1 {
		t.Fatalf("hang-up: %d %v", res.StatusCode, status)
	}
	for id, code := range status {
		if code != 200 {
			t.Errorf("the instance's BYE of %s got %d, want the browser's 200", id, code)
		}
	}
	ended := until("1:ended:remote", "1:ended", "error")
	if !strings.Contains(ended, "BYE via SIP/2.0/WSS") {
		t.Errorf("the browser's call ended by %s, want a BYE over clb's WSS", ended)
	}

	// Call 2, ended by the browser.
	w.Do("POST", "/execute/sync", map[string]any{"script": "return window.call(2)", "args": []any{}}, nil)
	until("2:confirmed", "2:failed", "2:ended", "error")
	w.Do("POST", "/execute/sync", map[string]any{"script": "window.sessions[2].terminate(); return true", "args": []any{}}, nil)
	until("2:ended:local", "2:ended", "error")
	// JsSIP ends the call as it sends the BYE: poll the instance for it.
	noCalls := func() {
		t.Helper()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(10 * time.Second)
		for len(in.Calls()) > 0 {
			select {
			case <-tick.C:
			case <-deadline:
				t.Fatalf("the browser's BYE did not reach the instance: calls %v; events:\n%s", in.Calls(), events())
			}
		}
	}
	noCalls()

	// Calls 3 and 4, from the instance to the browser by its
	// registration's Path.
	callBrowser := func() string {
		t.Helper()
		res, err := http.Post(in.HTTPAddr()+"/_clb/call?aor=sip:alice@example.com", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var answer struct {
			CallID string `json:"call_id"`
			Status int    `json:"status"`
		}
		_ = json.NewDecoder(res.Body).Decode(&answer)
		res.Body.Close()
		if res.StatusCode != 200 || answer.Status != 200 {
			t.Fatalf("the instance's call to the browser: %d %+v; events:\n%s", res.StatusCode, answer, events())
		}
		return answer.CallID
	}
	id := callBrowser()
	incoming := until("in1:incoming", "in1:failed", "error")
	for _, want := range []string{"transport=udp", "transport=wss", ";flow=", "dir=out"} {
		if !strings.Contains(incoming, want) {
			t.Errorf("the INVITE's Record-Route at the browser lacks %s: %s", want, incoming)
		}
	}
	until("in1:confirmed", "in1:failed", "in1:ended", "error")
	res, err = http.Post(in.HTTPAddr()+"/_clb/hangup?call-id="+id, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("hang-up of the call to the browser: %d", res.StatusCode)
	}
	if ended := until("in1:ended:remote", "in1:ended", "error"); !strings.Contains(ended, "BYE via SIP/2.0/WSS") {
		t.Errorf("the call to the browser ended by %s, want a BYE over clb's WSS", ended)
	}
	callBrowser()
	until("in2:confirmed", "in2:failed", "in2:ended", "error")
	w.Do("POST", "/execute/sync", map[string]any{"script": "window.sessions.in2.terminate(); return true", "args": []any{}}, nil)
	until("in2:ended:local", "in2:ended", "error")
	noCalls()
	e := events()
	if strings.Contains(e, "error:") || strings.Contains(e, "failed") {
		t.Errorf("events:\n%s", e)
	}
	t.Logf("the browser's events:\n%s", e)
}
