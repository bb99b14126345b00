// Package etcdtest runs a real etcd for tests: the Debian package
// etcd-server's /usr/bin/etcd (or etcd on PATH), one member on free loopback
// ports with its data in the test's temporary directory.
//
// Without etcd installed a test that asks for one is skipped, unless
// CLB_REQUIRE_ETCD=1 (CI), where it fails.
//
// Concurrency: a Server is driven by the test's goroutine; Stop and Start
// may be called in turn, any number of times. A Log is safe for concurrent
// use (Add from one goroutine, Await from another).
package etcdtest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
)

// Server is one etcd member run by a test.
type Server struct {
	t                    testing.TB
	bin, dir             string
	clientPort, peerPort int
	certFile, keyFile    string // serving clients over TLS if set
	cmd                  *exec.Cmd
	exited               chan struct{} // closed when cmd has been waited for
}

// Start runs etcd until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, "", "")
}

// StartTLS runs etcd serving its clients over TLS (an https:// URL) with
// the certificate and key in the files named, until the test ends.
func StartTLS(t testing.TB, certFile, keyFile string) *Server {
	t.Helper()
	return start(t, certFile, keyFile)
}

func start(t testing.TB, certFile, keyFile string) *Server {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CLB_REQUIRE_ETCD") == "1" {
			t.Fatalf("etcd is not installed (Debian: apt-get install etcd-server), and CLB_REQUIRE_ETCD=1: %v", err)
		}
		t.Skipf("etcd is not installed (Debian: apt-get install etcd-server): %v", err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), clientPort: FreePort(t), peerPort: FreePort(t),
		certFile: certFile, keyFile: keyFile}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Wanted reports whether a test that can run with or without etcd should
// start one: etcd is installed, or CLB_REQUIRE_ETCD=1 (where Start then
// fails without it).
func Wanted() bool {
	_, err := exec.LookPath("etcd")
	return err == nil || os.Getenv("CLB_REQUIRE_ETCD") == "1"
}

// URL is the member's client URL.
func (s *Server) URL() string {
	scheme := "http"
	if s.certFile != "" {
		scheme = "https"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.clientPort)
}

// Start starts the member again after Stop, on the same ports and data, and
// returns once it serves clients (its log says so).
func (s *Server) Start() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("etcdtest: Start of a running etcd")
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", s.peerPort)
	args := []string{"--data-dir", s.dir + "/data", "--name", "t",
		"--listen-client-urls", s.URL(), "--advertise-client-urls", s.URL(),
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "t=" + peer, "--logger", "zap", "--log-outputs", "stderr"}
	if s.certFile != "" {
		args = append(args, "--cert-file", s.certFile, "--key-file", s.keyFile)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.SysProcAttr = procAttr()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("etcdtest: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	ready := make(chan struct{})
	var logged strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		said := false
		for sc.Scan() {
			if !said {
				logged.WriteString(sc.Text() + "\n")
				// etcd 3.4 says "serving client traffic", 3.5 on
				// "ready to serve client requests".
				if strings.Contains(sc.Text(), "serving client traffic") || strings.Contains(sc.Text(), "ready to serve client requests") {
					said = true
					close(ready)
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
		if !said {
			close(ready)
		}
		close(s.exited)
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-s.exited
		s.cmd = nil
		s.t.Fatal("etcdtest: etcd did not serve within 30 s")
	}
	select {
	case <-s.exited:
		s.cmd = nil
		s.t.Fatalf("etcdtest: etcd exited before serving:\n%s", logged.String())
	default:
	}
}

// Stop kills the member (SIGKILL: as a crash; its data stays) and waits for
// it to be gone.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.t.Errorf("etcdtest: etcd (pid %d) did not exit", s.cmd.Process.Pid)
	}
	s.cmd = nil
}

// FreePort is a loopback TCP port free now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Log is a logger whose messages a test can wait for: waiting on a log line
// is waiting on an event, not a sleep.
type Log struct {
	mu    sync.Mutex
	lines []string // "logger: message"
	more  chan struct{}
	next  int // the first line Await has not looked at
}

// NewLog is a logger that writes to the test's log and to l.
func NewLog(t testing.TB) (*zap.Logger, *Log) {
	l := NewLines()
	return zaptest.NewLogger(t, zaptest.WrapOptions(zap.Hooks(l.hook))), l
}

// NewLines is a Log fed by Add: the lines of another process's log.
func NewLines() *Log { return &Log{more: make(chan struct{})} }

func (l *Log) hook(e zapcore.Entry) error {
	l.Add(e.LoggerName + ": " + e.Message)
	return nil
}

// Add appends a line.
func (l *Log) Add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	close(l.more)
	l.more = make(chan struct{})
}

// Mark makes Await look only at lines logged from now on.
func (l *Log) Mark() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next = len(l.lines)
}

// Await waits up to d for a line, logged since the last Mark or Await, that
// contains text ("logger: message"), and returns it; the next Await looks at
// the lines after it.
func (l *Log) Await(t testing.TB, text string, d time.Duration) string {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for i := l.next; i < len(l.lines); i++ {
			if strings.Contains(l.lines[i], text) {
				l.next = i + 1
				line := l.lines[i]
				l.mu.Unlock()
				return line
			}
		}
		more := l.more
		l.mu.Unlock()
		select {
		case <-more:
		case <-deadline.C:
			t.Fatalf("no log line with %q within %v", text, d)
		}
	}
}
