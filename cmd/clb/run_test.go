package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this binary as clb itself: with CLB_TEST_MAIN set
// it is main().
func TestMain(m *testing.M) {
	if os.Getenv("CLB_TEST_MAIN") != "" {
		main()
		return
	}
	os.Exit(m.Run())
}

// proc is a clb run process of a test, with its JSON log lines.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	lines   chan map[string]any
	done    chan error
	started map[string]any // the "clb started" entry
}

// startCLB runs this test binary as clb run -config path, with env added to
// its environment, and waits for its "clb started" log; the process is
// killed at the end of the test if it is still running.
func startCLB(t *testing.T, path string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "run", "-config", path)
	cmd.Env = append(append(os.Environ(), "CLB_TEST_MAIN=1"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, lines: make(chan map[string]any, 1024), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for sc.Scan() {
			var entry map[string]any
			if json.Unmarshal(sc.Bytes(), &entry) == nil {
				p.lines <- entry
			}
		}
		close(p.lines)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			for range p.lines {
			}
			<-p.done
		}
	})
	p.started = p.log("clb started")
	return p
}

// log waits for the next log entry with message msg.
func (p *proc) log(msg string) map[string]any {
	p.t.Helper()
	return nextLog(p.t, p.lines, msg)
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// exit waits for the process to exit and returns its error.
func (p *proc) exit() error {
	p.t.Helper()
	for range p.lines {
	}
	select {
	case err := <-p.done:
		return err
	case <-time.After(20 * time.Second):
		p.t.Fatal("clb did not exit within 20 s")
		return nil
	}
}

// TestRunServesAndStopsOnSignal: clb run serves SIP on its listeners, logs
// where, and on SIGTERM (then SIGINT) stops and exits 0.
func TestRunServesAndStopsOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			path := writeFile(t, `listen:
  sip: [udp://127.0.0.1:0, tcp://127.0.0.1:0]
instances:
  - {name: a, sip: udp://127.0.0.1:5071}
`)
			p := startCLB(t, path)
			listeners, _ := p.started["sip"].([]any)
			if len(listeners) != 2 {
				t.Fatalf("listeners %v", p.started["sip"])
			}
			udp := strings.TrimPrefix(listeners[0].(string), "udp://")

			conn, err := net.Dial("udp", udp)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(conn, "OPTIONS sip:x@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKrun1\r\nFrom: <sip:a@b>;tag=1\r\n"+
				"To: <sip:c@d>\r\nCall-ID: run-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 0\r\nContent-Length: 0\r\n\r\n", udp, conn.LocalAddr())
			buf := make([]byte, 2048)
			n, err := conn.Read(buf)
			if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 483 ") {
				t.Fatalf("answer %q, %v", buf[:n], err)
			}

			p.signal(sig)
			p.log("clb stopped")
			if err := p.exit(); err != nil {
				t.Fatalf("exit: %v", err)
			}
		})
	}
}

// TestRunReloadsAndShutsDownGracefully: SIGHUP reloads the file (a bad one
// is refused and the running configuration stays); on SIGTERM an HTTP
// request in flight completes before clb exits 0.
func TestRunReloadsAndShutsDownGracefully(t *testing.T) {
	// Both instances hold /slow: its minted key may land on either (b
	// ramps), and the test must not depend on which.
	got, release := make(chan struct{}), make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(got)
			<-release
		}
		fmt.Fprint(w, "done")
	})
	slow := httptest.NewServer(handler)
	defer slow.Close()
	other := httptest.NewServer(handler)
	defer other.Close()
	head := "listen: {http: 127.0.0.1:0, admin: 127.0.0.1:0}\nhttp: {grace: 30s}\ninstances:\n"
	a := fmt.Sprintf("  - {name: a, http: %s}\n", slow.URL)
	b := fmt.Sprintf("  - {name: b, http: %s}\n", other.URL)
	path := writeFile(t, head+a)
	p := startCLB(t, path)
	httpAddr, adminAddr := p.started["http"].(string), p.started["admin"].(string)

	if err := os.WriteFile(path, []byte(head+a+b), 0o644); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	if e := p.log("configuration reloaded"); fmt.Sprint(e["added"]) != "[b]" {
		t.Errorf("reload log %v", e)
	}
	if got := instanceNames(t, adminAddr); got != "a:up b:ramping" {
		t.Errorf("after SIGHUP: %s", got)
	}
	if err := os.WriteFile(path, []byte(head+"  - {name: c, http: http://127.0.0.1:1, weight: -1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	if e := p.log("reload refused; the running configuration stays"); !strings.Contains(fmt.Sprint(e["error"]), "instances[0].weight") {
		t.Errorf("refusal log %v", e)
	}
	if got := instanceNames(t, adminAddr); !strings.HasPrefix(got, "a:up b:") {
		t.Errorf("after a refused SIGHUP: %s", got)
	}

	answer := make(chan string, 1)
	go func() {
		res, err := http.Get("http://" + httpAddr + "/slow")
		if err != nil {
			answer <- err.Error()
			return
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		answer <- res.Status + " " + string(body)
	}()
	select {
	case <-got:
	case a := <-answer:
		t.Fatalf("/slow answered before it was held: %s", a)
	case <-time.After(30 * time.Second):
		t.Fatal("/slow did not reach an instance within 30 s")
	}
	p.signal(syscall.SIGTERM)
	if e := p.log("http shutting down"); e["in_flight"] != 1.0 {
		t.Errorf("shutdown log %v", e)
	}
	close(release)
	if a := <-answer; a != "200 OK done" {
		t.Errorf("request in flight at SIGTERM: %s", a)
	}
	p.log("clb stopped")
	if err := p.exit(); err != nil {
		t.Fatalf("exit: %v", err)
	}
}
func nextLog(t *testing.T, lines <-chan map[string]any, msg string) map[string]any {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-lines:
			if !ok {
				t.Fatalf("log ended before %q", msg)
			}
			if e["msg"] == msg {
				return e
			}
		case <-timeout:
			t.Fatalf("no %q log within 10 s", msg)
		}
	}
}

// TestDemo runs clb demo as a process (this binary, instances included) and
// checks its exit status and account.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	text := demoAccount(t)
	for _, want := range []string{"status page: http://127.0.0.1:", "(its replica partner)", "is back on",
		"load factor 0.25 → 0.50 → 0.75 → 1.00", "8 of 8 dialogs ended with 200 to BYE", ": 0 lost."} {
		if !strings.Contains(text, want) {
			t.Errorf("the account lacks %q:\n%s", want, text)
		}
	}
}

// TestDemoUpgrade runs clb demo -upgrade as a process and checks its exit
// status and account: blue closed, new sessions on green, blue's finishing
// on blue and failing over inside it, 0 lost.
func TestDemoUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	text := demoAccount(t, "-upgrade")
	for _, want := range []string{"POST /api/v1/clusters/blue/weight?value=0", "(new) dialog and web session on green",
		"(its replica partner, in blue)", "blue   weight   0, 6 sessions", "green  weight 100, 4 sessions", "blue is empty", ": 0 lost."} {
		if !strings.Contains(text, want) {
			t.Errorf("the account lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "(new) dialog and web session on blue") {
		t.Errorf("a new session started on closed blue:\n%s", text)
	}
}

// demoAccount runs clb demo with args as a process, fails the test unless it
// exits 0 within 2 minutes, and returns its account.
func demoAccount(t *testing.T, args ...string) string {
	t.Helper()
	name := strings.Join(append([]string{"clb demo"}, args...), " ")
	cmd := exec.Command(os.Args[0], append([]string{"demo"}, args...)...)
	cmd.Env = append(os.Environ(), "CLB_TEST_MAIN=1")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out.String())
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not end within 2 minutes:\n%s", name, out.String())
	}
	return out.String()
}
