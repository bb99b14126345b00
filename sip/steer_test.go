package sip

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"golang.org/x/net/ipv4"
)

// testClock is a clock the test moves by hand; while held, whoever reads
// it waits for the release.
type testClock struct {
	ns   atomic.Int64
	gate atomic.Pointer[chan struct{}]
	held atomic.Int64 // readers that came to the gate since hold
}

func newTestClock() *testClock {
	c := new(testClock)
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) now() time.Time {
	if g := c.gate.Load(); g != nil {
		c.held.Add(1)
		<-*g
	}
	return time.Unix(0, c.ns.Load())
}

// hold stops the clock's readers until release.
func (c *testClock) hold() (release func()) {
	ch := make(chan struct{})
	c.held.Store(0)
	c.gate.Store(&ch)
	return func() {
		c.gate.Store(nil)
		close(ch)
	}
}

func (c *testClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// datagramCounts is what each of a steer's readers has read.
func datagramCounts(st *steer) []uint64 {
	n := make([]uint64, len(st.stats))
	for k := range st.stats {
		n[k] = st.stats[k].datagrams.Load()
	}
	return n
}

// settled waits until every reader that read a batch has counted it done.
func settled(t *testing.T, st *steer) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for k := range st.stats {
		for rs := &st.stats[k]; rs.finished.Load() != rs.batches.Load(); runtime.Gosched() {
			if time.Now().After(deadline) {
				t.Fatalf("reader %d: %d reads, %d done after %v", k, rs.batches.Load(), rs.finished.Load(), wait)
			}
		}
	}
}

func countsSince(st *steer, before []uint64) []uint64 {
	n := datagramCounts(st)
	for k := range n {
		n[k] -= before[k]
	}
	return n
}

// probe is a request clb answers itself at once (Max-Forwards 0: 483).
func probe(p *peer, clb netip.AddrPort, callID string) []byte {
	req := options(p, clb, callID, "")
	mf := gosip.MaxForwardsHeader(0)
	req.ReplaceHeader(&mf)
	return []byte(req.String())
}

// TestUDPSteering: at a low rate every peer's datagrams land on a UDP
// listener's socket 0, the other readers reading nothing; a flood that
// socket 0's reader does not keep up with spreads the peers over all the
// sockets; a quiet window brings them back to socket 0. The counters are
// the readers' own; the clock is the test's (frozen but when moved), so
// only the flood's backlog can spread and only the moved clock return.
func TestUDPSteering(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("steering needs SO_ATTACH_REUSEPORT_CBPF (Linux)")
	}
	clock := newTestClock()
	c := newCluster(t, clusterOptions{n: 1, readers: 4, now: clock.now})
	ut := c.server.transports[0].(*udpTransport)
	st := ut.steers[0]
	if st == nil {
		t.Fatal("a listener of 4 sockets is not steered")
	}
	const flood = 1000
	if rb := ut.socks[0][0].rcvbuf; rb < 4<<20 {
		t.Skipf("a %d-byte receive buffer may drop the flood (needs CAP_NET_ADMIN or net.core.rmem_max)", rb)
	}
	const phones = 64 // over 4 sockets, each gets one but with odds of 4·(3/4)^64
	ps := make([]*peer, phones)
	for i := range ps {
		ps[i] = newPeerAt(t, fmt.Sprintf("phone%d", i), "udp", "127.0.0.2", nil)
	}
	// round sends one probe from each phone, each after the answer before.
	round := func(name string) []uint64 {
		t.Helper()
		before := datagramCounts(st)
		for i, p := range ps {
			p.sendRaw(probe(p, c.udp, fmt.Sprintf("%s-%d", name, i)), c.udp)
			p.recvResponse(483)
		}
		return countsSince(st, before)
	}
	concentrated := func(name string) {
		t.Helper()
		if st.spread.Load() {
			t.Fatalf("%s: spread", name)
		}
		got := round(name)
		if got[0] != phones {
			t.Errorf("%s: socket 0 read %d of %d probes (all: %v)", name, got[0], phones, got)
		}
		for k, n := range got[1:] {
			if n != 0 {
				t.Errorf("%s: socket %d read %d probes, want 0 (all: %v)", name, k+1, n, got)
			}
		}
	}
	concentrated("low rate")

	// The flood: one source, prebuilt datagrams in one sendmmsg, queued far
	// faster than a reader answers them; every answer counted, so that all
	// are read.
	fc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.5:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	_ = fc.SetReadBuffer(4 << 20)
	answered := make(chan int, 1)
	go func() {
		buf := make([]byte, maxMessage)
		n := 0
		for n < flood {
			if err := fc.SetReadDeadline(time.Now().Add(wait)); err != nil {
				break
			}
			if _, _, err := fc.ReadFromUDPAddrPort(buf); err != nil {
				break
			}
			n++
		}
		answered <- n
	}()
	// Socket 0's reader is held on the clock right after it reads one
	// probe, so that the whole flood is on its socket before it reads
	// again: a flooder preempted by other tests would let it catch up
	// and break its streak of full batches.
	release := clock.hold()
	ps[0].sendRaw(probe(ps[0], c.udp, "hold"), c.udp)
	// Once the probe is off the socket the reader is at the gate or on its
	// way there (other datagrams may come to the socket after it, an
	// instance's answer to a health probe, say).
	for deadline, read := time.Now().Add(wait), false; !read || clock.held.Load() == 0; runtime.Gosched() {
		read = read || queued(t, ut.socks[0][0].c) == 0
		if time.Now().After(deadline) {
			release()
			t.Fatalf("socket 0's reader did not read a probe within %v", wait)
		}
	}
	fp := &peer{name: "flooder", addr: localAddr(fc.LocalAddr())}
	pc, dst := ipv4.NewPacketConn(fc), net.UDPAddrFromAddrPort(c.udp)
	ms := make([]ipv4.Message, flood)
	for j := range ms {
		ms[j] = ipv4.Message{Buffers: [][]byte{probe(fp, c.udp, fmt.Sprintf("flood-%d", j))}, Addr: dst}
	}
	for sent := 0; sent < flood; {
		n, err := pc.WriteBatch(ms[sent:], 0) // one sendmmsg: all queued at once
		if err != nil {
			release()
			t.Fatal(err)
		}
		sent += n
	}
	release()
	ps[0].recvResponse(483)
	if n := <-answered; n != flood {
		t.Fatalf("%d of %d flood requests answered", n, flood)
	}
	if !st.spread.Load() {
		t.Fatalf("a flood of %d did not spread the readers (read: %v)", flood, datagramCounts(st))
	}
	got := round("spread")
	for k, n := range got {
		if n == 0 {
			t.Errorf("spread: socket %d read none of %d probes (all: %v)", k, phones, got)
		}
	}

	// A window with the readers idle on the clock: back to socket 0, at
	// the first read after it (that read's reader decides before answering).
	// A reader that has sent its last answer may not yet have counted its
	// busy time: advanced before that, the clock would count as busy.
	settled(t, st)
	clock.advance(steerWindow)
	ps[0].sendRaw(probe(ps[0], c.udp, "return"), c.udp)
	ps[0].recvResponse(483)
	concentrated("after a quiet window")
	c.quiet()
}

// TestSteerHysteresis: concentrated, socket 0's reader spreads once busy
// for spreadBusy of a window and not below it; spread, the readers
// concentrate only when together busy for less than concentrateBusy of a
// window, and not before a window has passed since spreading. The
// program is attached to a real SO_REUSEPORT group; busy time is on the
// test's clock.
func TestSteerHysteresis(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("steering needs SO_ATTACH_REUSEPORT_CBPF (Linux)")
	}
	first, err := listenUDP(netip.MustParseAddrPort("127.0.0.1:0"), true)
	if err != nil {
		t.Fatal(err)
	}
	second, err := listenUDP(localAddr(first.c.LocalAddr()), true)
	if err != nil {
		t.Fatal(err)
	}
	defer first.c.Close()
	defer second.c.Close()
	clock := newTestClock()
	st := newSteer([]udpSocket{first, second}, clock.now, zap.NewNop())
	if st == nil {
		t.Fatal("not steered")
	}
	streak := make([]int, 2)
	// window spends a steerWindow in which reader k is busy for share of
	// it, in ten batches of one datagram, then reads once more (the
	// decision), and reports whether the readers are spread.
	window := func(share float64, ks ...int) bool {
		step, start := steerWindow/10, clock.ns.Load()
		for range 10 {
			for _, k := range ks {
				woke := st.woke(k, 1, &streak[k])
				clock.advance(time.Duration(share * float64(step) / float64(len(ks))))
				st.done(k, woke)
			}
			clock.advance(step - time.Duration(share*float64(step)))
		}
		clock.ns.Store(start + int64(steerWindow))
		st.done(ks[0], st.woke(ks[0], 1, &streak[ks[0]]))
		return st.spread.Load()
	}
	if window(spreadBusy-0.05, 0) {
		t.Fatalf("spread with socket 0's reader busy %.2f of a window", spreadBusy-0.05)
	}
	if window(spreadBusy-0.05, 1) {
		t.Fatal("spread by another reader's load: only socket 0's reader's counts")
	}
	if !window(spreadBusy+0.05, 0) {
		t.Fatalf("not spread with socket 0's reader busy %.2f of a window", spreadBusy+0.05)
	}
	if !window(concentrateBusy+0.05, 0, 1) {
		t.Fatalf("concentrated with the readers busy %.2f of a window together", concentrateBusy+0.05)
	}
	if window(concentrateBusy-0.05, 1, 0) {
		t.Fatalf("spread with the readers busy %.2f of a window together", concentrateBusy-0.05)
	}

	// A streak of full batches spreads at once; the window it begins keeps
	// the readers spread until it ends, idle or not.
	for range spreadStreak - 1 {
		st.woke(0, udpBatch, &streak[0])
	}
	if st.spread.Load() {
		t.Fatalf("spread after %d full batches", spreadStreak-1)
	}
	st.woke(0, udpBatch-1, &streak[0])
	for range spreadStreak - 1 {
		st.woke(0, udpBatch, &streak[0])
	}
	if st.spread.Load() {
		t.Fatal("spread by full batches not in a row")
	}
	st.woke(0, udpBatch, &streak[0])
	if !st.spread.Load() {
		t.Fatalf("not spread after %d full batches in a row", spreadStreak)
	}
	clock.advance(steerWindow - 1)
	st.woke(1, 1, &streak[1])
	if !st.spread.Load() {
		t.Fatal("concentrated within a window of spreading")
	}
	clock.advance(1)
	st.woke(1, 1, &streak[1])
	if st.spread.Load() {
		t.Fatal("still spread after an idle window")
	}
}
