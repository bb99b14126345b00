package sip

import (
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn is a real connection whose writes are counted.
type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// tcpPair is both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (near *countingConn, far net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	a.SetReadDeadline(time.Now().Add(wait))
	return &countingConn{Conn: d}, a
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The messages one read brought go out in one write per connection, each
// connection's in their order, whether the connection was the message's
// own (a response's) or found in the table (a request's).
func TestStreamBatchOneWritePerConnection(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, transport: "tcp"})
	tr := c.server.transport("tcp").(*streamTransport)
	a, aFar := tcpPair(t)
	b, bFar := tcpPair(t)
	ca := &streamConn{c: a, writeTimeout: time.Second}
	cb := &streamConn{c: b, remote: netip.MustParseAddrPort("127.0.0.2:5999"), writeTimeout: time.Second}
	tr.mu.Lock()
	tr.conns[cb.remote] = cb
	tr.mu.Unlock()
	t.Cleanup(func() { tr.unregister(cb) })

	batch := &streamBatch{t: tr}
	toA := destination{endpoint: endpoint{"tcp", netip.MustParseAddrPort("127.0.0.3:5060")}, conn: ca}
	toB := destination{endpoint: endpoint{"tcp", cb.remote}}
	for _, m := range []struct {
		dst  destination
		data string
	}{{toA, "a1;"}, {toB, "b1;"}, {toA, "a2;"}, {toA, "a3;"}, {toB, "b2;"}} {
		if !batch.queue(m.dst, []byte(m.data), "", false) {
			t.Fatalf("%q not queued", m.data)
		}
	}
	if batch.queue(destination{endpoint: endpoint{"tcp", netip.MustParseAddrPort("127.0.0.4:5060")}}, []byte("x"), "", false) {
		t.Error("queued to a peer with no connection open (it is dialled at once)")
	}
	if a.writes.Load() != 0 || b.writes.Load() != 0 {
		t.Fatal("written before the flush")
	}
	batch.flush()
	if got := readN(t, aFar, 9); got != "a1;a2;a3;" {
		t.Errorf("connection a got %q", got)
	}
	if got := readN(t, bFar, 6); got != "b1;b2;" {
		t.Errorf("connection b got %q", got)
	}
	if a.writes.Load() != 1 || b.writes.Load() != 1 {
		t.Errorf("writes: a %d, b %d; want one each", a.writes.Load(), b.writes.Load())
	}
	if len(batch.pending) != 0 || len(batch.buf) != 0 {
		t.Errorf("after the flush: %d pending, %d bytes", len(batch.pending), len(batch.buf))
	}
}

// A message to go back on a connection that failed by the flush goes on
// another connection to the Via's address, as Server.send would send it.
func TestStreamBatchFailedConnection(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, transport: "tcp"})
	tr := c.server.transport("tcp").(*streamTransport)
	inst := c.instances[c.names[0]]
	gone, _ := tcpPair(t)
	gone.Close()
	batch := &streamBatch{t: tr}
	req := newInvite(inst, c.tcp, "batch", "batch-1")
	dst := destination{endpoint: endpoint{"tcp", inst.addr}, conn: &streamConn{c: gone, writeTimeout: time.Second}}
	if !batch.queue(dst, []byte(req.String()), "", false) {
		t.Fatal("not queued")
	}
	batch.flush()
	got := inst.recvRequest("INVITE")
	if got.CallID().Value() != "batch-1" {
		t.Errorf("Call-ID %q", got.CallID().Value())
	}
}
