// Package dnstest runs a real DNS server for tests: Debian's dnsmasq on a
// free loopback port, answering from a hosts file the test rewrites while
// it runs (dnsmasq's --hostsdir re-reads it on change, told by inotify).
// It answers only for the names of the file, under test.: any other name
// of that domain is not found, and it asks no other server.
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
	"testing"
	"time"
)

// Server is one dnsmasq, ended (by its PID) when the test ends.
type Server struct {
	t     testing.TB
	addr  netip.AddrPort
	dir   string
	lines chan string // dnsmasq's log
}

// Start starts dnsmasq answering records: host name → addresses.
func Start(t testing.TB, records map[string][]string) *Server {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		if os.Getenv("CLB_REQUIRE_DNSMASQ") == "1" {
			t.Fatal("dnsmasq is not installed and CLB_REQUIRE_DNSMASQ=1")
		}
		t.Skip("dnsmasq is not installed (apt-get install dnsmasq-base)")
	}
	s := &Server{t: t, dir: t.TempDir()}
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
		if s.start(bin, port) {
			return s
		}
		if attempt == 4 {
			t.Fatal("dnsmasq did not start")
		}
	}
}

// start runs dnsmasq on port and reports whether it started.
func (s *Server) start(bin string, port int) bool {
	cmd := exec.Command(bin, "--no-daemon", "--port="+strconv.Itoa(port), "--listen-address=127.0.0.1",
		"--bind-interfaces", "--no-resolv", "--no-hosts", "--local=/test/", "--hostsdir="+s.dir,
		"--log-facility=-", "--pid-file=")
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
	s.t.Cleanup(stop)
	s.addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	s.lines = lines
	return true
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
