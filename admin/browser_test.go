package admin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"clb/browsertest"
	"clb/loadfactor"
)

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
	w := browsertest.Start(t)
	f := start(t, Options{Token: "tok"})
	// One round of probes of the (absent) instances: a failure each in the
	// history, not yet enough to mark them down.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.srv.o.Health.CheckOnce(ctx)

	w.Do("POST", "/url", map[string]string{"url": f.base + "/#token=tok"}, nil)
	var v pageView
	w.Do("POST", "/execute/async", map[string]any{"script": waitRows,
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
	w.Do("POST", "/execute/async", map[string]any{"script": waitRows,
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
		w.WaitFor(fmt.Sprintf(`+document.getElementById("chart").dataset.points >= %d`, 2*k))
	}
	if max := w.WaitFor(`document.getElementById("chart").dataset.max`); max == "0" {
		t.Errorf("the chart's highest rate is %s", max)
	}
	if n := w.WaitFor(`document.querySelectorAll("#chart polyline").length`); n != "3" {
		t.Errorf("the chart has %s lines, want one per instance", n)
	}

	// The key lookup box says what the API says.
	var r Route
	f.call("GET", "/api/v1/route?key=user%3Aalice", &r)
	w.WaitFor(`(() => { document.getElementById("key").value = "user:alice"; document.querySelector("#lookup button").click(); return true; })()`)
	got := w.WaitFor(`document.querySelector('#lookup-result table[data-key="user:alice"]')?.innerText`)
	for _, s := range []string{"owner\t" + r.Owner, "replica partner\t" + r.Replica, strings.Join(r.Preference, " → ")} {
		if !strings.Contains(got, s) {
			t.Errorf("the lookup shows %q, lacks %q", got, s)
		}
	}

	// The what-if of draining each instance: b, draining at 0.75, would move
	// what it still owns; a and c a share each.
	var d Drains
	f.call("GET", "/api/v1/whatif/drains", &d)
	drains := w.WaitFor(`document.querySelectorAll("#drains tr").length === 3 &&
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
	w.Do("GET", "/screenshot", nil, &png)
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
	w.Do("POST", "/se/log", map[string]string{"type": "browser"}, &logs)
	for _, l := range logs {
		if l.Level == "SEVERE" || l.Level == "WARNING" {
			t.Errorf("console %s: %s", l.Level, l.Message)
		}
	}
}
