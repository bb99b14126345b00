package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"clb/config"
)

// TestNodeStopLeavesNoGoroutine (STYLE 8): a node that served SIP over UDP
// and TCP, HTTP, the admin API, health probes and reloads, stopped with one
// reload in progress and a SIP TCP connection open, leaves no goroutine that
// runs clb's code or that clb's code started once run has returned.
func TestNodeStopLeavesNoGoroutine(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	head := strings.Replace(nodeHead, "sip: [udp://127.0.0.1:0]", "sip: [udp://127.0.0.1:0, tcp://127.0.0.1:0]", 1)
	path := writeFile(t, head+a.yaml()+b.yaml())
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	before := goroutineIDs()

	n, err := newNode(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan struct{})
	stopped := make(chan error, 1)
	go func() { stopped <- n.run(ctx, hup) }()

	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for _, url := range []string{"http://" + n.http.Addr() + "/x", "http://" + n.admin.Addr() + "/api/v1/status"} {
		res, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s: %s", url, res.Status)
		}
	}
	if code, body := adminCall(t, n.admin.Addr(), "POST", "/api/v1/reload", nil); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	listeners := n.sip.Listeners()
	udp, err := net.Dial("udp", strings.TrimPrefix(listeners[0], "udp://"))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	fmt.Fprintf(udp, "MESSAGE sip:svc@x SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKleak\r\nFrom: <sip:u@x>;tag=1\r\n"+
		"To: <sip:svc@x>\r\nCall-ID: leak-1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", udp.LocalAddr())
	_ = udp.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	if k, err := udp.Read(buf); err != nil || !bytes.HasPrefix(buf[:k], []byte("SIP/2.0 200 ")) {
		t.Fatalf("SIP answer %q, %v", buf[:k], err)
	}
	tcp, err := net.Dial("tcp", strings.TrimPrefix(listeners[1], "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	fmt.Fprintf(tcp, "OPTIONS sip:x@x SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bKleak2\r\nFrom: <sip:a@b>;tag=1\r\n"+
		"To: <sip:c@d>\r\nCall-ID: leak-2\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 0\r\nContent-Length: 0\r\n\r\n", tcp.LocalAddr())
	_ = tcp.SetReadDeadline(time.Now().Add(10 * time.Second))
	if k, err := tcp.Read(buf); err != nil || !bytes.HasPrefix(buf[:k], []byte("SIP/2.0 483 ")) {
		t.Fatalf("SIP over TCP: answer %q, %v", buf[:k], err) // clb holds the connection open now
	}

	hup <- struct{}{} // taken by run's reload loop: a reload in progress at the stop
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if left := clbGoroutines(t, before); left != "" {
		t.Errorf("goroutines of clb left after the node stopped:\n%s", left)
	}
}

// clbGoroutines is the stacks of the goroutines not in before with a frame (or a creator) in clb's own non-test code. A goroutine
// that has done its work may still be on its way out (past a
// WaitGroup.Done, or a send its owner has received): the check yields to
// those until none is left or 10 s have passed; one that waits for
// something is still there then.
func clbGoroutines(t *testing.T, before map[string]bool) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(filepath.Dir(file))) + "/" // clb's module root
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		for id, stack := range goroutines() {
			if before[id] { // this test's goroutine among them
				continue
			}
			for _, line := range strings.Split(stack, "\n") {
				if f, _, _ := strings.Cut(strings.TrimSpace(line), ":"); strings.HasPrefix(f, root) && !strings.HasSuffix(f, "_test.go") {
					left = append(left, stack)
					break
				}
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		runtime.Gosched()
	}
}

// goroutines is every goroutine's stack by its id.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if rest, ok := strings.CutPrefix(g, "goroutine "); ok {
			id, _, _ := strings.Cut(rest, " ")
			out[id] = g
		}
	}
	return out
}

func goroutineIDs() map[string]bool {
	ids := map[string]bool{}
	for id := range goroutines() {
		ids[id] = true
	}
	return ids
}
