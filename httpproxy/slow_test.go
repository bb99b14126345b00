package httpproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"clb/config"
)

// TestSlowHeadCut: a client that sends its request head a byte at a time
// (slowloris) is cut off once the head has taken read_header_timeout,
// though each byte comes well within every other timeout, and another
// client is served meanwhile.
func TestSlowHeadCut(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, limits: func(l *config.HTTP) { l.ReadHeaderTimeout = 300 * time.Millisecond }})
	conn := dialRaw(t, c.server.Addr())
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	stop, trickled := make(chan struct{}), make(chan int)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond) // the client's pace
		defer tick.Stop()
		head := "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "
		for n := 0; ; n++ {
			b := byte('a')
			if n < len(head) {
				b = head[n]
			}
			select {
			case <-stop:
				trickled <- n
				return
			case <-tick.C:
				if _, err := conn.Write([]byte{b}); err != nil {
					trickled <- n
					return
				}
			}
		}
	}()
	cl := c.client()
	for range 20 {
		if res := c.get(cl, "/other"); res.StatusCode != 200 {
			t.Fatalf("another client got %d meanwhile", res.StatusCode)
		}
	}
	got, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("clb kept a connection whose head never ended")
	}
	close(stop)
	if n := <-trickled; n > 200 {
		t.Errorf("clb took %d bytes (20 ms apart) of one head, want it cut at 300 ms", n)
	}
	if len(got) > 0 && string(got[:12]) == "HTTP/1.1 200" {
		t.Errorf("the trickled head was served: %q", got)
	}
}

// TestIdleConnectionsBounded: 2,000 idle client connections (each sent one
// request, then nothing) take no service from another client, and each is
// closed by the idle timeout.
func TestIdleConnectionsBounded(t *testing.T) {
	const idle = 2000
	c := newCluster(t, clusterOptions{n: 1, limits: func(l *config.HTTP) { l.IdleTimeout = time.Second }})
	conns := make([]net.Conn, idle)
	for i := range conns {
		conns[i] = dialRaw(t, c.server.Addr())
		if _, err := io.WriteString(conns[i], "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	for _, conn := range conns {
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("idle client's request: %v %v", res, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
	}
	cl := c.client()
	for range 100 {
		if res := c.get(cl, "/busy"); res.StatusCode != 200 {
			t.Fatalf("another client got %d with %d idle connections open", res.StatusCode, idle)
		}
	}
	// Every idle connection ends at clb's idle timeout: a read sees the
	// close (EOF), not the test's own deadline.
	for i, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		var b [1]byte
		if _, err := conn.Read(b[:]); err == nil {
			t.Fatalf("idle connection %d got data", i)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("idle connection %d was not closed by clb", i)
		}
	}
}
