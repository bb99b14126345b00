package main

import (
	"bufio"
	"encoding/json"
	"fmt"

	"net"
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
			cmd := exec.Command(os.Args[0], "run", "-config", path)
			cmd.Env = append(os.Environ(), "CLB_TEST_MAIN=1")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				if cmd.ProcessState == nil {
					_ = cmd.Process.Kill()
					<-done
				}
			})
			lines := make(chan map[string]any, 16)
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					var entry map[string]any
					if json.Unmarshal(sc.Bytes(), &entry) == nil {
						lines <- entry
					}
				}
				close(lines)
			}()
			started := nextLog(t, lines, "clb started")
			listeners, _ := started["sip"].([]any)
			if len(listeners) != 2 {
				t.Fatalf("listeners %v", started["sip"])
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

			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			nextLog(t, lines, "clb stopped")
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("clb did not exit within 10 s of the signal")
			}
		})
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
