package sip

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"clb/netpark/netparktest"
)

// Idle stream connections are parked (netpark): no goroutine, no buffer,
// until they speak again.

func (c *cluster) stream(token string) *streamTransport {
	return c.server.transport(token).(*streamTransport)
}

func (c *cluster) parked(token string) int { return c.stream(token).park.Len() }

func (c *cluster) streamConns(token string) int {
	t := c.stream(token)
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// ping sends an RFC 5626 keep-alive and reads its pong.
func ping(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	if _, err := io.WriteString(conn, "\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	pong := make([]byte, 2)
	if _, err := io.ReadFull(br, pong); err != nil || string(pong) != "\r\n" {
		t.Fatalf("pong %q, %v", pong, err)
	}
}

// refused483 sends an INVITE with Max-Forwards 0 and reads clb's 483: a
// message parsed and answered by the proxy.
func refused483(t *testing.T, c *cluster, conn net.Conn, br *bufio.Reader, callID string) {
	t.Helper()
	inv := newInvite(&peer{transport: "tcp", addr: localAddr(conn.LocalAddr())}, c.tcp, "idle", callID)
	mf := gosip.MaxForwardsHeader(0)
	inv.ReplaceHeader(&mf)
	if _, err := io.WriteString(conn, inv.String()); err != nil {
		t.Fatal(err)
	}
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SIP/2.0 483 ") {
		t.Fatalf("got %q, %v; want a 483", line, err)
	}
	for line != "\r\n" { // the rest of the head (no body)
		if line, err = br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStreamParkedServedAgain(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond})
	conn := dialCLB(t, c)
	br := bufio.NewReader(conn)
	for i := range 3 {
		ping(t, conn, br)
		netparktest.Until(t, "the connection is parked", func() bool { return c.parked("tcp") == 1 })
		refused483(t, c, conn, br, "parked-"+string(rune('a'+i)))
		netparktest.Until(t, "the connection is parked", func() bool { return c.parked("tcp") == 1 })
	}
	if n := c.streamConns("tcp"); n != 1 {
		t.Fatalf("%d connections in the table, want 1", n)
	}
}

// Bytes that come as the connection is being parked, and a message whose
// first bytes wake it, are framed as ever.
func TestStreamParkingRaces(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Microsecond})
	conn := dialCLB(t, c)
	br := bufio.NewReader(conn)
	for range 200 {
		ping(t, conn, br)
	}
	netparktest.Until(t, "the connection is parked", func() bool { return c.parked("tcp") == 1 })
	inv := newInvite(&peer{transport: "tcp", addr: localAddr(conn.LocalAddr())}, c.tcp, "idle", "split")
	mf := gosip.MaxForwardsHeader(0)
	inv.ReplaceHeader(&mf)
	data := inv.String()
	io.WriteString(conn, data[:30])
	netparktest.Until(t, "the connection is woken", func() bool { return c.parked("tcp") == 0 })
	io.WriteString(conn, data[30:])
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "SIP/2.0 483 ") {
		t.Fatalf("split message: %q, %v", line, err)
	}
}

func TestStreamParkedClosedByClient(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond})
	conn := dialCLB(t, c)
	ping(t, conn, bufio.NewReader(conn))
	netparktest.Until(t, "the connection is parked", func() bool { return c.parked("tcp") == 1 })
	conn.Close()
	netparktest.Until(t, "the connection is gone from the table", func() bool { return c.streamConns("tcp") == 0 })
}

func TestStreamParkedIdleTimeout(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond, idleTimeout: 300 * time.Millisecond})
	conn := dialCLB(t, c)
	br := bufio.NewReader(conn)
	// clb's idle time starts once it has the message, after this and
	// before the answer reaches the test: measured from here, a close at
	// the idle timeout is never seen early.
	sent := time.Now()
	ping(t, conn, br)
	netparktest.Until(t, "the connection is parked", func() bool { return c.parked("tcp") == 1 })
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read %v from an idle connection, want EOF (closed by clb)", err)
	}
	if waited := time.Since(sent); waited < 300*time.Millisecond {
		t.Fatalf("closed after %v idle, before the idle timeout", waited)
	}
	netparktest.Until(t, "the connection is gone from the table", func() bool { return c.streamConns("tcp") == 0 })
}

// Parked connections still count against MaxConns: one more is closed at
// once.
func TestStreamParkedCounted(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond, maxConns: 2})
	for range 2 {
		conn := dialCLB(t, c)
		ping(t, conn, bufio.NewReader(conn))
	}
	netparktest.Until(t, "both are parked", func() bool { return c.parked("tcp") == 2 })
	third := dialCLB(t, c)
	io.WriteString(third, "\r\n\r\n")
	n, err := third.Read(make([]byte, 2))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a third connection over MaxConns 2 was not closed at once (%d bytes, %v)", n, err)
	}
}

func TestStreamShutdownClosesParked(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond})
	var readers []*bufio.Reader
	for range 3 {
		conn := dialCLB(t, c)
		br := bufio.NewReader(conn)
		ping(t, conn, br)
		readers = append(readers, br)
	}
	netparktest.Until(t, "all are parked", func() bool { return c.parked("tcp") == 3 })
	stopped := make(chan struct{})
	go func() { c.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return with parked connections")
	}
	for i, br := range readers {
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("connection %d: %v, want EOF", i, err)
		}
	}
}

// 1,000 idle SIP TCP connections hold no goroutine each.
func TestStreamIdleNoGoroutines(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Millisecond})
	warm := dialCLB(t, c)
	ping(t, warm, bufio.NewReader(warm))
	netparktest.Until(t, "parked", func() bool { return c.parked("tcp") == 1 })
	before := runtime.NumGoroutine()
	for range 1000 {
		conn := dialCLB(t, c)
		ping(t, conn, bufio.NewReader(conn))
	}
	netparktest.Until(t, "all parked", func() bool { return c.parked("tcp") == 1001 })
	if n := runtime.NumGoroutine(); n > before+20 {
		t.Fatalf("%d goroutines with 1,001 idle connections, %d with one", n, before)
	}
}

// SIP over TLS is parked too.
func TestStreamParkedTLS(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, tls: true, linger: time.Millisecond})
	conn, err := tlsDial(c)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for range 3 {
		ping(t, conn, br)
		netparktest.Until(t, "the connection is parked", func() bool { return c.parked("tls") == 1 })
	}
}

func tlsDial(c *cluster) (net.Conn, error) {
	conn, err := tls.Dial("tcp", c.tls.String(), c.ca.ClientConfig())
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(wait))
	return conn, nil
}

// A connection that sent a message and went quiet is parked at once, not
// after linger.
func TestStreamIdleParkedAtOnce(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, linger: time.Hour})
	conn := dialCLB(t, c)
	br := bufio.NewReader(conn)
	ping(t, conn, br)
	netparktest.Until(t, "the connection is parked (linger is an hour)", func() bool { return c.parked("tcp") == 1 })
	ping(t, conn, br)
	refused483(t, c, conn, br, "at-once")
}
