package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"clb/loadfactor"
)

// webDriver is a chromedriver process and one headless Chromium session,
// spoken to in W3C WebDriver JSON.
type webDriver struct {
	t       *testing.T
	base    string // http://127.0.0.1:PORT/session/ID
	timeout time.Duration
}

// findBrowser is Debian's chromium and chromium-driver, or a skip (a failure
// when CLB_REQUIRE_BROWSER is set, as in CI).
func findBrowser(t *testing.T) (chromium, driver string) {
	var err1, err2 error
	chromium, err1 = exec.LookPath("chromium")
	driver, err2 = exec.LookPath("chromedriver")
	if err1 != nil || err2 != nil {
		if os.Getenv("CLB_REQUIRE_BROWSER") != "" {
			t.Fatalf("CLB_REQUIRE_BROWSER is set and chromium or chromedriver is missing: %v %v", err1, err2)
		}
		t.Skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
	}
	return chromium, driver
}

// startWebDriver starts chromedriver and a headless Chromium session with
// the given extra command-line arguments.
func startWebDriver(t *testing.T, args ...string) *webDriver {
	chromium, driver := findBrowser(t)
	// chromedriver wants a port number: take a free one.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(driver, fmt.Sprintf("--port=%d", port), "--allowed-ips=127.0.0.1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "started successfully") {
				close(ready)
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	select {
	case <-ready:
	case <-exited:
		t.Fatal("chromedriver exited before it was ready")
	case <-time.After(30 * time.Second):
		t.Fatal("chromedriver not ready within 30 s")
	}

	w := &webDriver{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port), timeout: 60 * time.Second}
	var session struct {
		SessionID string `json:"sessionId"`
	}
	w.do("POST", "/session", map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": chromium,
			"args": append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
				"--no-first-run", "--window-size=1400,1000", "--disable-dev-shm-usage", "--disable-extensions", "--no-default-browser-check"}, args...),
		},
		"goog:loggingPrefs": map[string]string{"browser": "ALL"},
	}}}, &session)
	if session.SessionID == "" {
		t.Fatal("no WebDriver session")
	}
	w.base += "/session/" + session.SessionID
	t.Cleanup(func() { w.do("DELETE", "", nil, nil) })
	w.do("POST", "/timeouts", map[string]int{"script": 20000, "pageLoad": 20000}, nil)
	return w
}

// do sends a WebDriver command and decodes its value into out.
func (w *webDriver) do(method, path string, body, out any) {
	w.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, w.base+path, rd)
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatalf("WebDriver %s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	var answer struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(data, &answer); err != nil || res.StatusCode != 200 {
		w.t.Fatalf("WebDriver %s %s: %d %s", method, path, res.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(answer.Value, out); err != nil {
			w.t.Fatalf("WebDriver %s %s: %v in %s", method, path, err, answer.Value)
		}
	}
}

// waitRows waits, in the page (a MutationObserver, no polling from here),
// until the status table shows each instance of want in its state; it
// returns the page's text.
const waitRows = `
const want = arguments[0], done = arguments[arguments.length - 1];
function check() {
  const got = {};
  for (const r of document.querySelectorAll("#rows tr")) got[r.dataset.instance] = r.querySelector(".state").textContent;
  if (!Object.keys(want).every(k => got[k] === want[k])) return false;
  const failed = {};
  for (const r of document.querySelectorAll("#rows tr")) failed[r.dataset.instance] = r.querySelectorAll(".hist i.f").length;
  done({ text: document.body.innerText, failed: failed });
  return true;
}
if (!check()) {
  const obs = new MutationObserver(() => { if (check()) obs.disconnect(); });
  obs.observe(document.getElementById("rows"), { childList: true, subtree: true });
}`

// waitFor waits, in the page (a MutationObserver, no polling from here),
// until the JavaScript expression expr is truthy, and returns its value as
// text.
func (w *webDriver) waitFor(expr string) string {
	w.t.Helper()
	script := `const done = arguments[arguments.length - 1];
function check() { const v = (` + expr + `); if (v) { done(String(v)); return true; } return false; }
if (!check()) {
  const obs = new MutationObserver(() => { if (check()) obs.disconnect(); });
  obs.observe(document.body, { childList: true, subtree: true, attributes: true, characterData: true });
}`
	var v string
	w.do("POST", "/execute/async", map[string]any{"script": script, "args": []any{}}, &v)
	return v
}

type pageView struct {
	Text   string         `json:"text"`
	Failed map[string]int `json:"failed"`
}

// TestStatusPageInBrowser loads the status page in headless Chromium: it
// renders every instance's name and state with no console error, shows a
// failed probe in the health history, follows a change by itself, draws
// requests per second per instance, looks a key up as the API does, and
// shows the what-if of draining each instance; its screenshot is written to
// $CLB_ARTIFACTS/status-page.png.
func TestStatusPageInBrowser(t *testing.T) {
	w := startWebDriver(t)
	f := start(t, Options{Token: "tok"})
	// One round of probes of the (absent) instances: a failure each in the
	// history, not yet enough to mark them down.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.srv.o.Health.CheckOnce(ctx)

	w.do("POST", "/url", map[string]string{"url": f.base + "/#token=tok"}, nil)
	var v pageView
	w.do("POST", "/execute/async", map[string]any{"script": waitRows,
		"args": []any{map[string]string{"a": "up", "b": "up", "c": "up"}}}, &v)
	for _, s := range []string{"a", "b", "c", "udp://127.0.0.1:5071", "http://127.0.0.1:8083", "1.00"} {
		if !strings.Contains(v.Text, s) {
			t.Errorf("the page does not show %q:\n%s", s, v.Text)
		}
	}
	if v.Failed["a"] != 1 {
		t.Errorf("failed probes shown %v, want one for a", v.Failed)
	}

	// The page refreshes itself: drain b and wait for the page to say so.
	if code, body := f.call("POST", "/api/v1/instances/b/drain", nil); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	w.do("POST", "/execute/async", map[string]any{"script": waitRows,
		"args": []any{map[string]string{"a": "up", "b": "draining", "c": "up"}}}, &v)
	if !strings.Contains(v.Text, "0.75") {
		t.Errorf("the page does not show b's factor 0.75:\n%s", v.Text)
	}

	// The chart: requests counted between refreshes, a new table each time
	// (the same instances) so that the page refreshes at once.
	for k := 1; k <= 3; k++ {
		for range 40 * k {
			f.m.Request("http", "GET", "a", "2xx")
		}
		for range 15 {
			f.m.Request("sip", "INVITE", "c", "forwarded")
		}
		if err := f.bal.Update(instances(), loadfactor.Params{Start: 0.25, Increase: 0.25, Period: time.Hour}, time.Now()); err != nil {
			t.Fatal(err)
		}
		w.waitFor(fmt.Sprintf(`+document.getElementById("chart").dataset.points >= %d`, 2*k))
	}
	if max := w.waitFor(`document.getElementById("chart").dataset.max`); max == "0" {
		t.Errorf("the chart's highest rate is %s", max)
	}
	if n := w.waitFor(`document.querySelectorAll("#chart polyline").length`); n != "3" {
		t.Errorf("the chart has %s lines, want one per instance", n)
	}

	// The key lookup box says what the API says.
	var r Route
	f.call("GET", "/api/v1/route?key=user%3Aalice", &r)
	w.waitFor(`(() => { document.getElementById("key").value = "user:alice"; document.querySelector("#lookup button").click(); return true; })()`)
	got := w.waitFor(`document.querySelector('#lookup-result table[data-key="user:alice"]')?.innerText`)
	for _, s := range []string{"owner\t" + r.Owner, "replica partner\t" + r.Replica, strings.Join(r.Preference, " → ")} {
		if !strings.Contains(got, s) {
			t.Errorf("the lookup shows %q, lacks %q", got, s)
		}
	}

	// The what-if of draining each instance: b, draining at 0.75, would move
	// what it still owns; a and c a share each.
	var d Drains
	f.call("GET", "/api/v1/whatif/drains", &d)
	drains := w.waitFor(`document.querySelectorAll("#drains tr").length === 3 &&
  Array.from(document.querySelectorAll("#drains tr")).map(r => r.dataset.instance + " " + r.cells[1].innerText.trim() + " " + r.cells[3].innerText).join("; ")`)
	for _, di := range d.Drains {
		if want := fmt.Sprintf("%s %.1f%% %s %.1f%%", di.Name, 100*di.Moved, di.Moves[0].To, 100*di.Moves[0].Share); !strings.Contains(drains, want) {
			t.Errorf("the drains table lacks %q:\n%s", want, drains)
		}
	}

	// A screenshot, kept by CI (CLB_ARTIFACTS) for a person to look at.
	dir := os.Getenv("CLB_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	var png []byte
	w.do("GET", "/screenshot", nil, &png)
	if len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Errorf("screenshot of %d bytes", len(png))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "status-page.png"), png, 0o644); err != nil {
		t.Error(err)
	}

	var logs []struct {
		Level   string `json:"level"`
		Message string `json:"message"`
	}
	w.do("POST", "/se/log", map[string]string{"type": "browser"}, &logs)
	for _, l := range logs {
		if l.Level == "SEVERE" || l.Level == "WARNING" {
			t.Errorf("console %s: %s", l.Level, l.Message)
		}
	}
}
