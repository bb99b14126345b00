package sip

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
)

// sippPath finds SIPp. Without it the interop tests skip, unless
// CLB_REQUIRE_SIPP is set (as .ci/run does, after installing it): then its
// absence fails them.
func sippPath(t *testing.T) string {
	path, err := exec.LookPath("sipp")
	if err != nil {
		if os.Getenv("CLB_REQUIRE_SIPP") != "" {
			t.Fatal("CLB_REQUIRE_SIPP is set but sipp is not installed (apt-get install -y sip-tester)")
		}
		t.Skip("sipp not installed (apt-get install -y sip-tester); CLB_REQUIRE_SIPP=1 makes this a failure")
	}
	return path
}

// freePort is a port free for both UDP and TCP on loopback, for SIPp, which
// cannot be told to pick one. Another process may take it before SIPp binds
// it: then SIPp fails to start, which the test reports.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		tl.Close()
		if err == nil {
			ul.Close()
			return port
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return 0
}

// sippRun is one SIPp process the test started.
type sippRun struct {
	name  string
	cmd   *exec.Cmd
	dir   string
	out   bytes.Buffer
	done  chan error
	stats string // statistics CSV
	errs  string // unexpected messages
}

func startSIPp(t *testing.T, sipp, name string, args ...string) *sippRun {
	t.Helper()
	dir := t.TempDir()
	r := &sippRun{name: name, dir: dir, done: make(chan error, 1),
		stats: filepath.Join(dir, "stats.csv"), errs: filepath.Join(dir, "errors.log")}
	args = append(args, "-nostdin", "-trace_stat", "-stf", r.stats, "-fd", "1",
		"-trace_err", "-error_file", r.errs, "-buff_size", "2097152")
	r.cmd = exec.Command(sipp, args...)
	r.cmd.Dir = dir
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = r.cmd.Process.Kill() // ours, by PID
			<-r.done
		}
	})
	return r
}

// wait waits for the process to end by itself within limit.
func (r *sippRun) wait(t *testing.T, limit time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(limit):
		_ = r.cmd.Process.Kill()
		<-r.done
		t.Fatalf("%s did not finish within %v; output:\n%s", r.name, limit, r.out.String())
		return nil
	}
}

// stop asks a SIPp UAS to finish its calls and quit (SIGUSR1), and waits.
func (r *sippRun) stop(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		werr := r.wait(t, time.Second)
		t.Fatalf("%s exited before the end of the run (%v, %v); its output:\n%s", r.name, err, werr, tail(r.out.String(), 2000))
	}
	_ = r.wait(t, 30*time.Second)
}

// calls reads the last statistics line: successful and failed calls.
func (r *sippRun) calls(t *testing.T) (ok, failed int) {
	t.Helper()
	f, err := os.Open(r.stats)
	if err != nil {
		t.Fatalf("%s: %v; output:\n%s", r.name, err, r.out.String())
	}
	defer f.Close()
	rd := csv.NewReader(f)
	rd.Comma = ';'
	rd.FieldsPerRecord = -1
	rows, err := rd.ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("%s: statistics: %v (%d rows)", r.name, err, len(rows))
	}
	col := func(name string) int {
		for i, h := range rows[0] {
			if h == name {
				n, _ := strconv.Atoi(rows[len(rows)-1][i])
				return n
			}
		}
		t.Fatalf("%s: no column %s", r.name, name)
		return 0
	}
	return col("SuccessfulCall(C)"), col("FailedCall(C)")
}

// unexpected is what SIPp logged as unexpected messages. SIPp's own
// watchdog notices (it was not scheduled in time: a loaded machine) say
// nothing of the messages and are left out, with the header line that
// introduces its events when nothing else is left.
func (r *sippRun) unexpected() string {
	b, _ := os.ReadFile(r.errs)
	var kept []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "Overload warning: the minor watchdog timer") ||
			strings.Contains(line, "Overload warning: the major watchdog timer") {
			continue
		}
		kept = append(kept, line)
	}
	out := strings.TrimSpace(strings.Join(kept, "\n"))
	if out == "The following events occurred:" {
		return ""
	}
	return out
}

// TestSIPpInterop: SIPp UAC → clb → three SIPp UAS, 1,000 calls over UDP and
// over TCP: no call fails at the UAC or at any UAS (a misrouted ACK or BYE
// would be an unexpected message at the UAS that got it), and each UAS
// takes between 20% and 47% of the calls.
func TestSIPpInterop(t *testing.T) {
	sipp := sippPath(t)
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			const calls = 1000
			mode := map[string]string{"udp": "u1", "tcp": "t1"}[transport]
			scenarios, err := filepath.Abs(filepath.Join("..", "testdata", "sipp"))
			if err != nil {
				t.Fatal(err)
			}
			var uas []*sippRun
			var in []config.Instance
			for i := range 3 {
				port := freePort(t)
				name := fmt.Sprintf("uas%d", i+1)
				uas = append(uas, startSIPp(t, sipp, name, "-sf", filepath.Join(scenarios, "uas.xml"),
					"-t", mode, "-i", "127.0.0.1", "-p", strconv.Itoa(port)))
				in = append(in, config.Instance{Name: name, Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{
					Transport: transport, Host: "127.0.0.1", Port: port}}})
			}
			bal, err := balancer.New(in, loadfactor.DefaultParams())
			if err != nil {
				t.Fatal(err)
			}
			srv, err := NewServer(ServerOptions{
				ProxyOptions: ProxyOptions{Balancer: bal, Instances: in},
				Listen:       []config.SIPAddr{{Endpoint: config.Endpoint{Transport: transport, Host: "127.0.0.1"}}},
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ctx) }()
			defer func() {
				cancel()
				<-served
			}()
			clb := strings.TrimPrefix(srv.Listeners()[0], transport+"://")

			uac := startSIPp(t, sipp, "uac", "-sf", filepath.Join(scenarios, "uac.xml"), "-t", mode,
				"-i", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), "-m", strconv.Itoa(calls),
				"-r", "200", "-l", "200", "-timeout", "60s", "-timeout_error", clb)
			err = uac.wait(t, 90*time.Second)
			for _, u := range uas {
				u.stop(t)
			}
			ok, failed := uac.calls(t)
			if err != nil || ok != calls || failed != 0 {
				t.Errorf("UAC: %d successful, %d failed calls (exit: %v); unexpected:\n%s\noutput:\n%s",
					ok, failed, err, uac.unexpected(), tail(uac.out.String(), 2000))
			}
			total := 0
			for _, u := range uas {
				ok, failed := u.calls(t)
				total += ok
				t.Logf("%s: %d calls (%.1f%%), %d failed", u.name, ok, 100*float64(ok)/calls, failed)
				if failed != 0 || u.unexpected() != "" {
					t.Errorf("%s: %d failed calls; unexpected messages:\n%s", u.name, failed, tail(u.unexpected(), 2000))
				}
				if share := float64(ok) / calls; share < 0.20 || share > 0.47 {
					t.Errorf("%s took %.1f%% of the calls, want 20%%–47%%", u.name, 100*share)
				}
			}
			if total != calls {
				t.Errorf("the UAS completed %d calls, want %d", total, calls)
			}
		})
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
