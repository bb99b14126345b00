package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// notifySocket is a unixgram socket standing in for systemd's; its
// datagrams come on the channel.
func notifySocket(t *testing.T, name string) <-chan string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	states := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			states <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return states
}

func nextState(t *testing.T, states <-chan string) string {
	t.Helper()
	select {
	case s := <-states:
		return s
	case <-time.After(20 * time.Second):
		t.Fatal("no sd_notify datagram within 20 s")
		return ""
	}
}

// TestNotifier: a datagram per state, to a socket path and to an abstract
// socket ('@'); without NOTIFY_SOCKET nothing is sent and nothing fails.
func TestNotifier(t *testing.T) {
	for _, name := range []string{
		filepath.Join(t.TempDir(), "notify"),
		fmt.Sprintf("@clb-notify-test-%d", os.Getpid()),
	} {
		states := notifySocket(t, name)
		sd := notifier{socket: name, log: zaptest.NewLogger(t)}
		sd.ready()
		sd.reloading()
		sd.stopping()
		if got := nextState(t, states); got != "READY=1" {
			t.Errorf("%s: %q, want READY=1", name, got)
		}
		if got := nextState(t, states); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
			t.Errorf("%s: %q, want RELOADING=1 and MONOTONIC_USEC", name, got)
		}
		if got := nextState(t, states); got != "STOPPING=1" {
			t.Errorf("%s: %q, want STOPPING=1", name, got)
		}
	}
	notifier{}.ready() // no socket: nothing to do
}

// TestRunNotifiesSystemd: clb run, with NOTIFY_SOCKET set as systemd sets it
// for a Type=notify service, says READY=1 once it serves, RELOADING=1 with
// the monotonic time and READY=1 again around a SIGHUP reload (a refused one
// too), and STOPPING=1 on SIGTERM.
func TestRunNotifiesSystemd(t *testing.T) {
	b := newBackend(t, "a")
	socket := filepath.Join(t.TempDir(), "notify")
	states := notifySocket(t, socket)
	head := "listen: {http: 127.0.0.1:0}\nhealth: {active: false}\ninstances:\n"
	path := writeFile(t, head+b.yaml())
	p := startCLB(t, path, "NOTIFY_SOCKET="+socket)
	if got := nextState(t, states); got != "READY=1" {
		t.Fatalf("first state %q, want READY=1", got)
	}
	// Ready means serving.
	conn, err := net.Dial("tcp", p.started["http"].(string))
	if err != nil {
		t.Fatalf("after READY=1: %v", err)
	}
	conn.Close()

	for _, text := range []string{head + b.yaml(), head + "  - {name: c, http: http://127.0.0.1:1, weight: -1}\n"} {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		before, _ := monotonicUsec()
		p.signal(syscall.SIGHUP)
		got := nextState(t, states)
		after, _ := monotonicUsec()
		usec, ok := strings.CutPrefix(got, "RELOADING=1\nMONOTONIC_USEC=")
		n, err := strconv.ParseInt(usec, 10, 64)
		if !ok || err != nil || n < before || n > after {
			t.Errorf("at SIGHUP: %q, want RELOADING=1 and MONOTONIC_USEC from %d to %d", got, before, after)
		}
		if got := nextState(t, states); got != "READY=1" {
			t.Errorf("after the reload: %q, want READY=1", got)
		}
	}

	p.signal(syscall.SIGTERM)
	if got := nextState(t, states); got != "STOPPING=1" {
		t.Errorf("at SIGTERM: %q, want STOPPING=1", got)
	}
	if err := p.exit(); err != nil {
		t.Fatalf("exit: %v", err)
	}
}
