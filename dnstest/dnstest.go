// Package dnstest runs a real DNS server for tests: Debian's dnsmasq on a
// free loopback port, answering from a hosts file the test rewrites while
// it runs (dnsmasq's --hostsdir re-reads it on change, told by inotify).
// SRV records (--srv-host) dnsmasq reads only at start, so they live in a
// second dnsmasq the first forwards their names to (--servers-file, which
// SIGHUP re-reads): SetSRV starts a new one, points the first at it and
// only then ends the old one, so the address a test gives clb never stops
// answering. It answers only for the names it is given, under test.: any
// other name of that domain is not found, and it asks no other server.
// Pause and Resume stop and continue it (SIGSTOP, SIGCONT): a server that
// stops answering.
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
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a dnsmasq and the one holding its SRV records, ended (by their
// PIDs) when the test ends.
type Server struct {
	t     testing.TB
	bin   string
	addr  netip.AddrPort
	dir   string // the hosts file's
	front *proc  // answers at addr
	back  *proc  // the SRV records and aliases
	gen   int    // of the back, named in the servers file
	cname []CNAME
}

// proc is one dnsmasq.
type proc struct {
	lines chan string // its log
	p     *os.Process
	stop  func() // ends p and waits for it
	port  int
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

// CNAME makes Alias a name for Target (--cname), an SRV name given with
// it.
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
	s := &Server{t: t, bin: bin, dir: filepath.Join(t.TempDir(), "hosts.d"), cname: cnames}
	// dnsmasq started by root reads the files as user nobody.
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Dir(filepath.Dir(s.dir)), filepath.Dir(s.dir)} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.write(records)
	s.back = s.startBack(srv)
	s.writeServers(srv)
	// A free port may be taken between finding it and dnsmasq binding it.
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		args := []string{"--port=" + strconv.Itoa(port), "--hostsdir=" + s.dir, "--servers-file=" + s.serversFile()}
		if s.front = s.start(args, "read "+filepath.Join(s.dir, "hosts")); s.front != nil {
			s.addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
			return s
		}
		if attempt == 4 {
			t.Fatal("dnsmasq did not start")
		}
	}
}

// startBack starts the dnsmasq that holds srv and the aliases.
func (s *Server) startBack(srv []SRV) *proc {
	for attempt := 0; ; attempt++ {
		port := freePort(s.t)
		args := []string{"--port=" + strconv.Itoa(port)}
		for _, r := range srv {
			args = append(args, fmt.Sprintf("--srv-host=%s,%s,%d,%d,%d", r.Name, r.Target, r.Port, r.Priority, r.Weight))
		}
		for _, c := range s.cname {
			args = append(args, fmt.Sprintf("--cname=%s,%s", c.Alias, c.Target))
		}
		if p := s.start(args, "started"); p != nil {
			s.gen++
			p.port = port
			return p
		}
		if attempt == 4 {
			s.t.Fatal("dnsmasq (SRV records) did not start")
		}
	}
}

func (s *Server) serversFile() string { return filepath.Join(filepath.Dir(s.dir), "servers") }

// writeServers points the front at the back for the names of srv and
// the aliases, and for a name of the back's generation, whose line in the
// front's log says it has read the file.
func (s *Server) writeServers(srv []SRV) {
	at := "127.0.0.1#" + strconv.Itoa(s.back.port)
	lines := []string{fmt.Sprintf("server=/%s/%s", s.genName(), at)}
	for _, r := range srv {
		lines = append(lines, fmt.Sprintf("server=/%s/%s", r.Name, at))
	}
	for _, c := range s.cname {
		lines = append(lines, fmt.Sprintf("server=/%s/%s", c.Alias, at))
	}
	s.writeFile(s.serversFile(), strings.Join(lines, "\n")+"\n")
}

func (s *Server) genName() string { return fmt.Sprintf("srv-%d.dnstest.test", s.gen) }

// start runs dnsmasq with args, and returns it once its log has a line
// holding ready; nil if it did not start. It is ended when the test ends.
func (s *Server) start(args []string, ready string) *proc {
	args = append([]string{"--no-daemon", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
		"--local=/test/", "--log-facility=-", "--pid-file=", "--local-ttl=" + strconv.Itoa(TTL)}, args...)
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
	p := &proc{lines: lines, p: cmd.Process}
	p.stop = sync.OnceFunc(func() {
		_ = cmd.Process.Kill() // the dnsmasq this test started, by its PID
		<-done
		_ = cmd.Wait()
	})
	if !s.await(lines, ready) {
		p.stop()
		return nil
	}
	s.t.Cleanup(p.stop)
	return p
}

// SetSRV replaces the SRV records (aliases given at start stay): it
// returns once the server answers with them. It answers throughout.
func (s *Server) SetSRV(srv []SRV) {
	s.t.Helper()
	old := s.back
	s.back = s.startBack(srv)
	s.writeServers(srv)
	if err := s.front.p.Signal(syscall.SIGHUP); err != nil {
		s.t.Fatal(err)
	}
	if !s.await(s.front.lines, "for domain "+s.genName()) {
		s.t.Fatal("dnsmasq did not read the new servers file")
	}
	old.stop()
}

// Pause stops dnsmasq (SIGSTOP): questions go unanswered until Resume.
func (s *Server) Pause() {
	s.t.Helper()
	if err := s.front.p.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
}

// Resume continues a paused dnsmasq (SIGCONT).
func (s *Server) Resume() {
	s.t.Helper()
	if err := s.front.p.Signal(syscall.SIGCONT); err != nil {
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
	if !s.await(s.front.lines, "read "+filepath.Join(s.dir, "hosts")) {
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
	s.writeFile(filepath.Join(s.dir, "hosts"), b.String())
}

// writeFile replaces name's content at once (a rename, from outside the
// hosts directory dnsmasq watches).
func (s *Server) writeFile(name, content string) {
	tmp := filepath.Join(filepath.Dir(s.dir), "new.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
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
