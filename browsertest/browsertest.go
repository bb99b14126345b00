// Package browsertest drives a real browser for tests: Debian's chromium,
// headless, through chromedriver in W3C WebDriver JSON. A test that needs
// it skips when they are not installed and fails when CLB_REQUIRE_BROWSER
// is set (as in CI).
//
// Concurrency: a Driver is one WebDriver session, used by one test
// goroutine; chromedriver is stopped by the test's cleanup.
package browsertest

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
	"strings"
	"testing"
	"time"
)

// Driver is a chromedriver process and one headless Chromium session,
// spoken to in W3C WebDriver JSON.
type Driver struct {
	t       testing.TB
	base    string // http://127.0.0.1:PORT/session/ID
	timeout time.Duration
}

// Find is Debian's chromium and chromium-driver, or a skip (a failure
// when CLB_REQUIRE_BROWSER is set, as in CI).
func Find(t testing.TB) (chromium, driver string) {
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

// Start starts chromedriver and a headless Chromium session with
// the given extra command-line arguments.
func Start(t testing.TB, args ...string) *Driver {
	chromium, driver := Find(t)
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

	w := &Driver{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port), timeout: 60 * time.Second}
	var session struct {
		SessionID string `json:"sessionId"`
	}
	// Chromium started while other test processes load the machine
	// sometimes exits at once ("session not created: Chrome instance
	// exited", seen in CI): what is tested is clb, so a browser that did
	// not start is started again, each time with a profile of its own.
	for attempt := 1; ; attempt++ {
		status, data := w.call("POST", "/session", map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
			"browserName": "chrome",
			"goog:chromeOptions": map[string]any{
				"binary": chromium,
				"args": append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
					"--disable-component-update", "--disable-sync", "--user-data-dir=" + t.TempDir(),
					"--no-first-run", "--window-size=1400,1000", "--disable-dev-shm-usage", "--disable-extensions", "--no-default-browser-check"}, args...),
			},
			"goog:loggingPrefs": map[string]string{"browser": "ALL"},
		}}})
		if status == 200 || attempt == 3 || !bytes.Contains(data, []byte("session not created")) {
			w.decode("POST", "/session", status, data, &session)
			break
		}
		t.Logf("WebDriver POST /session, attempt %d: %d %s", attempt, status, data)
	}
	if session.SessionID == "" {
		t.Fatal("no WebDriver session")
	}
	w.base += "/session/" + session.SessionID
	t.Cleanup(func() { w.Do("DELETE", "", nil, nil) })
	w.Do("POST", "/timeouts", map[string]int{"script": 20000, "pageLoad": 20000}, nil)
	return w
}

// Do sends a WebDriver command and decodes its value into out.
func (w *Driver) Do(method, path string, body, out any) {
	w.t.Helper()
	status, data := w.call(method, path, body)
	w.decode(method, path, status, data, out)
}

// call sends a WebDriver command and returns the answer's status and body.
func (w *Driver) call(method, path string, body any) (int, []byte) {
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
	return res.StatusCode, data
}

// decode fails the test unless the answer is a success, and decodes its
// value into out.
func (w *Driver) decode(method, path string, status int, data []byte, out any) {
	w.t.Helper()
	var answer struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(data, &answer); err != nil || status != 200 {
		w.t.Fatalf("WebDriver %s %s: %d %s", method, path, status, data)
	}
	if out != nil {
		if err := json.Unmarshal(answer.Value, out); err != nil {
			w.t.Fatalf("WebDriver %s %s: %v in %s", method, path, err, answer.Value)
		}
	}
}

// WaitFor waits, in the page (a MutationObserver, no polling from here),
// until the JavaScript expression expr is truthy, and returns its value as
// text.
func (w *Driver) WaitFor(expr string) string {
	w.t.Helper()
	script := `const done = arguments[arguments.length - 1];
function check() { const v = (` + expr + `); if (v) { done(String(v)); return true; } return false; }
if (!check()) {
  const obs = new MutationObserver(() => { if (check()) obs.disconnect(); });
  obs.observe(document.body, { childList: true, subtree: true, attributes: true, characterData: true });
}`
	var v string
	w.Do("POST", "/execute/async", map[string]any{"script": script, "args": []any{}}, &v)
	return v
}
