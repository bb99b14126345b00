package sip

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// rawPair is a loopback TCP connection, clb's end wrapped by rawTCP.
func rawPair(t *testing.T) (raw net.Conn, peer net.Conn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	raw = rawTCP(c)
	if _, ok := raw.(*rawTCPConn); !ok {
		t.Fatalf("rawTCP gave %T", raw)
	}
	t.Cleanup(func() { raw.Close() })
	return raw, peer
}

// TestRawTCPConn: the raw connection reads and writes what a TCPConn does,
// a write larger than the socket buffers whole, and fails as one: a
// deadline with os.ErrDeadlineExceeded, the peer's close with io.EOF, its
// own close with net.ErrClosed.
func TestRawTCPConn(t *testing.T) {
	raw, peer := rawPair(t)
	if err := raw.SetDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: many EAGAINs
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		got <- b
	}()
	if n, err := raw.Write(big); n != len(big) || err != nil {
		t.Fatalf("write: %d of %d, %v", n, len(big), err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not what was written", len(b))
	}
	if _, err := peer.Write([]byte("INVITE")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := io.ReadFull(raw, buf[:6]); err != nil || string(buf[:n]) != "INVITE" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if err := raw.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	if err := raw.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	if n, err := raw.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed: %d, %v", n, err)
	}
	raw.Close()
	if _, err := raw.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// TestUDPReadBatchAllocatesNothing: reading a batch of datagrams, which a
// UDP reader does for every one, allocates nothing, and gives each its
// bytes and sender.
func TestUDPReadBatchAllocatesNothing(t *testing.T) {
	s, err := listenUDP(netip.MustParseAddrPort("127.0.0.1:0"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.c.Close()
	to := localAddr(s.c.LocalAddr())
	client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	from := localAddr(client.LocalAddr())
	d := newDatagrams(udpBatch)
	for j := range d.bufs {
		d.bufs[j] = make([]byte, 100)
	}
	msg := []byte("OPTIONS sip:clb SIP/2.0\r\n\r\n")
	const runs = 10
	for range (runs + 1) * udpBatch { // AllocsPerRun runs the function once more
		if _, err := client.WriteToUDPAddrPort(msg, to); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(runs, func() {
		n, err := s.readBatch(&d)
		if err != nil || n != udpBatch { // all sent before: a full batch
			t.Fatalf("read %d: %v", n, err)
		}
		for j := range n {
			if d.peers[j] != from || !bytes.Equal(d.bufs[j][:d.n[j]], msg) {
				t.Fatalf("datagram %d: %q from %s", j, d.bufs[j][:d.n[j]], d.peers[j])
			}
		}
	})
	if allocs != 0 && !raceEnabled {
		t.Errorf("%v allocations per batch read", allocs)
	}
}
