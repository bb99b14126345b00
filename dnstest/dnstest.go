// Package dnstest runs a real DNS server for tests: Debian's dnsmasq on a
// free loopback port, answering from a hosts file the test rewrites while
// it runs (dnsmasq's --hostsdir re-reads it on change, told by inotify),
// and SRV records (--srv-host), which dnsmasq reads only at start: SetSRV
// restarts it on the same port. It answers only for the names it is given,
// under test.: any other name of that domain is not found, and it asks no
// other server. Pause and Resume stop and continue it (SIGSTOP, SIGCONT): a
// server that stops answering.
//
// Without dnsmasq the test is skipped, or fails when CLB_REQUIRE_DNSMASQ=1
// (CI sets it, and installs dnsmasq-base).
//
// Concurrency: a Server's methods are for the test's goroutine; Addr is
// safe from any.
package dnstest

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is one dnsmasq, ended (by its PID) when the test ends.
type Server struct {
	t     testing.TB
	bin   string
	addr  netip.AddrPort
	dir   string
	srv   []SRV
	cname []CNAME
	lines chan string // dnsmasq's log
	proc  *os.Process
	stop  func() // ends proc and waits for it
}

// Wanted reports whether a test should start dnsmasq: it is installed, or
// CLB_REQUIRE_DNSMASQ=1 (then Start fails without it). A test that can
// run without DNS asks before starting one, rather than be skipped.
func Wanted() bool {
	_, err := exec.LookPath("dnsmasq")
	return err == nil || os.Getenv("CLB_REQUIRE_DNSMASQ") == "1"
}

// SRV is one SRV record (RFC 2782) dnsmasq answers.
type SRV struct {
	// Name is the service's, such as _sip._udp.app.test.
	Name, Target           string
	Port, Priority, Weight int
}

// CNAME makes Alias a name for Target (--cname), which dnsmasq must know.
type CNAME struct{ Alias, Target string }

// TTL is the time to live of every answer, in seconds.
const TTL = 1

// Start starts dnsmasq answering records: host name → addresses.
func Start(t testing.TB, records map[string][]string) *Server {
	t.Helper()
	return StartSRV(t, records, nil)
}

// StartSRV starts dnsmasq answering records, the SRV records srv and the
// aliases cnames.
func StartSRV(t testing.TB, records map[string][]string, srv []SRV, cnames ...CNAME) *Server {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		if os.Getenv("CLB_REQUIRE_DNSMASQ") == "1" {
			t.Fatal("dnsmasq is not installed and CLB_REQUIRE_DNSMASQ=1")
		}
		t.Skip("dnsmasq is not installed (apt-get install dnsmasq-base)")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), srv: srv, cname: cnames}
	// dnsmasq started by root reads the file as user nobody.
	for _, dir := range []string{filepath.Dir(s.dir), s.dir} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.write(records)
	// A free port may be taken between finding it and dnsmasq binding it.
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		if s.start(port) {
			t.Cleanup(func() { s.stop() })
			return s
		}
		if attempt == 4 {
			t.Fatal("dnsmasq did not start")
		}
	}
}

// start runs dnsmasq on port and reports whether it started.
func (s *Server) start(port int) bool {
	args := []string{"--no-daemon", "--port=" + strconv.Itoa(port), "--listen-address=127.0.0.1",
		"--bind-interfaces", "--no-resolv", "--no-hosts", "--local=/test/", "--hostsdir=" + s.dir,
		"--log-facility=-", "--pid-file=", "--local-ttl=" + strconv.Itoa(TTL)}
	for _, r := range s.srv {
		args = append(args, fmt.Sprintf("--srv-host=%s,%s,%d,%d,%d", r.Name, r.Target, r.Port, r.Priority, r.Weight))
	}
	for _, c := range s.cname {
		args = append(args, fmt.Sprintf("--cname=%s,%s", c.Alias, c.Target))
	}
	cmd := exec.Command(s.bin, args...)
	out, err := cmd.StderrPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	lines, done := make(chan string, 256), make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody is waiting for it
			}
		}
		close(lines)
	}()
	stop := func() {
		_ = cmd.Process.Kill() // the dnsmasq this test started, by its PID
		<-done
		_ = cmd.Wait()
	}
	if !s.await(lines, "read "+filepath.Join(s.dir, "hosts")) {
		stop()
		return false
	}
	s.addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	s.lines, s.proc, s.stop = lines, cmd.Process, stop
	return true
}

// SetSRV replaces the SRV records: dnsmasq is restarted on the same port
// (it reads --srv-host only at start), and SetSRV returns once it answers
// again. Meanwhile, for a moment, nothing answers.
func (s *Server) SetSRV(srv []SRV) {
	s.t.Helper()
	s.stop()
	s.srv = srv
	// The port was ours a moment ago; another program may take it between.
	if !s.start(int(s.addr.Port())) {
		s.t.Fatalf("dnsmasq did not start again on %s", s.addr)
	}
}

// Pause stops dnsmasq (SIGSTOP): questions go unanswered until Resume.
func (s *Server) Pause() {
	s.t.Helper()
	if err := s.proc.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
}

// Resume continues a paused dnsmasq (SIGCONT).
func (s *Server) Resume() {
	s.t.Helper()
	if err := s.proc.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatal(err)
	}
}

// await reads dnsmasq's log until a line holds want (true), or it ends or
// 10 s pass (false).
func (s *Server) await(lines <-chan string, want string) bool {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				return false
			}
			if strings.Contains(line, want) {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

// Addr is where dnsmasq answers, UDP and TCP.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Set replaces the records and returns once dnsmasq has read them.
func (s *Server) Set(records map[string][]string) {
	s.t.Helper()
	s.write(records)
	if !s.await(s.lines, "read "+filepath.Join(s.dir, "hosts")) {
		s.t.Fatal("dnsmasq did not read the new hosts file")
	}
}

// write puts records in the hosts file at once (a rename: dnsmasq never
// reads half of it).
func (s *Server) write(records map[string][]string) {
	var b strings.Builder
	for name, addrs := range records {
		for _, a := range addrs {
			fmt.Fprintf(&b, "%s %s\n", a, name)
		}
	}
	tmp := filepath.Join(filepath.Dir(s.dir), filepath.Base(s.dir)+".tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "hosts")); err != nil {
		s.t.Fatal(err)
	}
}

// freePort is a port free for both UDP and TCP on 127.0.0.1 a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	for {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
}
