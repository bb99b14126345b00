package sip

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

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

// queued is the size of the next datagram waiting on c (0: none).
func queued(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ioErr error
	if err := raw.Control(func(fd uintptr) { n, ioErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ioErr != nil {
		t.Fatal(ioErr)
	}
	return n
}
