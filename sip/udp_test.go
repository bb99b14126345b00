package sip

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"clb/config"
)

// TestUDPBurstInOrder: a burst of INVITEs from one phone, which the reader
// takes from its socket several at a time, reaches the instance whole and
// in the order sent.
func TestUDPBurstInOrder(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1})
	phone := newPeer(t, "phone", "udp", nil)
	const n = 4 * udpBatch // the instance's socket buffer holds them all
	for i := range n {
		phone.send(newInvite(phone, c.udp, "alice", fmt.Sprintf("burst-%d", i)), c.udp)
	}
	for i := range n {
		_, req := c.recvAny("INVITE")
		if got, want := req.CallID().Value(), fmt.Sprintf("burst-%d", i); got != want {
			t.Fatalf("INVITE %d: Call-ID %s, want %s", i, got, want)
		}
	}
	c.quiet()
}

// udpSink is a UDP peer and a server whose one UDP listener sends to it.
func udpSink(t *testing.T, report func(string, bool)) (*Server, *peer) {
	t.Helper()
	srv, err := NewServer(ServerOptions{
		ProxyOptions: ProxyOptions{Report: report},
		Listen:       []config.SIPAddr{{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closeTransports)
	return srv, newPeer(t, "sink", "udp", make(chan envelope, 1024))
}

// TestSendBatch: queued datagrams leave in order when the batch is flushed
// (or fills up); one the kernel refuses (too large for a datagram) is
// reported against its instance, and those after it are still sent.
func TestSendBatch(t *testing.T) {
	var mu sync.Mutex
	var failed []string
	srv, sink := udpSink(t, func(instance string, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		if !ok {
			failed = append(failed, instance)
		}
	})
	b := newSendBatch(srv.transport("udp").(*udpTransport), 0, 0)
	msg := func(i int) []byte { return fmt.Appendf(nil, "SIP/2.0 200 OK\r\nCSeq: %d OPTIONS\r\n\r\n", i) }
	var want [][]byte
	const n = 2*udpBatch + 3 // fills the batch twice: flushed early twice
	for i := range n {
		data := msg(i)
		if i == 5 {
			data = make([]byte, 70_000) // over the 65,507 bytes a UDP datagram carries
		} else {
			want = append(want, data)
		}
		if _, ok := b.queue(sink.addr, data, "inst1", true); !ok {
			t.Fatalf("message %d not queued", i)
		}
	}
	b.flush(srv.proxy)
	for i, w := range want {
		select {
		case e := <-sink.inbox:
			if !bytes.Equal(e.raw, w) {
				t.Fatalf("datagram %d: got %q, want %q", i, e.raw, w)
			}
		case <-time.After(wait):
			t.Fatalf("datagram %d not received within %v", i, wait)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failed) != 1 || failed[0] != "inst1" {
		t.Errorf("send failures reported: %q, want [inst1]", failed)
	}
}

// TestSendBatchAllocatesNothing: queueing a batch of datagrams and sending
// it, which a UDP reader does for every message, allocate nothing. The sink
// is read only afterwards, so that its reading allocates nothing meanwhile.
func TestSendBatchAllocatesNothing(t *testing.T) {
	srv, _ := udpSink(t, nil)
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	to := localAddr(sink.LocalAddr())
	b := newSendBatch(srv.transport("udp").(*udpTransport), 0, 0)
	msg := []byte("SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
	const runs = 10
	allocs := testing.AllocsPerRun(runs, func() {
		for range udpBatch {
			if _, ok := b.queue(to, msg, "", false); !ok {
				t.Fatal("not queued")
			}
		}
		b.flush(srv.proxy)
	})
	if allocs != 0 && !raceEnabled {
		t.Errorf("%v allocations per batch of %d", allocs, udpBatch)
	}
	// AllocsPerRun runs the function once more than it is told.
	buf := make([]byte, 100)
	for i := range (runs + 1) * udpBatch {
		if err := sink.SetReadDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		n, _, err := sink.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("datagram %d: %q", i, buf[:n])
		}
	}
}

// TestUDPReaders: with several readers a UDP listener is still one address
// (the sockets share it), and requests and responses from many peers,
// which the kernel spreads among the sockets, all go through.
func TestUDPReaders(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, readers: 4})
	if got := c.server.Listeners(); len(got) != 2 || got[0] != "udp://"+c.udp.String() {
		t.Fatalf("listeners %v, want one UDP and one TCP", got)
	}
	uas := c.instances["inst1"]
	const phones = 16
	ps := make([]*peer, phones)
	for i := range ps {
		ps[i] = newPeer(t, fmt.Sprintf("phone%d", i), "udp", nil)
		ps[i].send(newInvite(ps[i], c.udp, "alice", fmt.Sprintf("readers-%d", i)), c.udp)
	}
	for range phones {
		_, inv := c.recvAny("INVITE")
		uas.send(respond(uas, inv, 200, "OK", "uas"), c.udp)
	}
	for i, p := range ps {
		if got, want := p.recvResponse(200).CallID().Value(), fmt.Sprintf("readers-%d", i); got != want {
			t.Errorf("phone %d: 200 of %s, want %s", i, got, want)
		}
	}
	c.quiet()
}

// TestUDPReadersDefault: without Readers a UDP listener gets a socket (and
// a reader) per CPU clb may use, up to maxReaders, on Linux, all on the
// listener's address, and requests and responses of many peers (spread
// among them by the kernel) all go through.
func TestUDPReadersDefault(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("several readers need SO_REUSEPORT (Linux)")
	}
	for _, procs := range []int{1, 3, maxReaders + 4} {
		prev := runtime.GOMAXPROCS(procs)
		c := newCluster(t, clusterOptions{n: 1})
		runtime.GOMAXPROCS(prev)
		ut := c.server.transports[0].(*udpTransport)
		if got, want := len(ut.socks[0]), min(procs, maxReaders); got != want {
			t.Errorf("GOMAXPROCS %d: %d UDP sockets, want %d", procs, got, want)
		}
		uas := c.instances["inst1"]
		for k, s := range ut.socks[0] {
			if got := localAddr(s.c.LocalAddr()); got != c.udp {
				t.Errorf("socket %d bound to %s, want %s", k, got, c.udp)
			}
		}
		ps := make([]*peer, 4*len(ut.socks[0]))
		for i := range ps {
			ps[i] = newPeer(t, fmt.Sprintf("phone%d", i), "udp", nil)
			ps[i].send(newInvite(ps[i], c.udp, "alice", fmt.Sprintf("default-%d-%d", procs, i)), c.udp)
		}
		for range ps {
			_, inv := c.recvAny("INVITE")
			uas.send(respond(uas, inv, 200, "OK", "uas"), c.udp)
		}
		for i, p := range ps {
			if got, want := p.recvResponse(200).CallID().Value(), fmt.Sprintf("default-%d-%d", procs, i); got != want {
				t.Errorf("GOMAXPROCS %d, phone %d: 200 of %s, want %s", procs, i, got, want)
			}
		}
		c.quiet()
	}
}

// TestUDPReceiveBuffer: a UDP socket gets udpReadBuffer of receive buffer
// where clb may force it (root, CAP_NET_ADMIN), else what
// net.core.rmem_max allows, and a listener whose buffer the kernel capped
// is logged with the sysctl to raise.
func TestUDPReceiveBuffer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the granted size is read back on Linux only")
	}
	raw, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Skip(err)
	}
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	want := udpReadBuffer
	if os.Geteuid() != 0 {
		want = min(udpReadBuffer, rmemMax)
	}
	core, logs := observer.New(zap.WarnLevel)
	var wg sync.WaitGroup
	tr := newUDPTransport(nil, zap.New(core), 1, &wg)
	if err := tr.listen(netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	if got := tr.socks[0][0].rcvbuf; got != want {
		t.Errorf("receive buffer %d bytes, want %d (rmem_max %d, uid %d)", got, want, rmemMax, os.Geteuid())
	}
	warned := logs.FilterMessageSnippet("capped the UDP receive buffer").Len()
	if capped := want < udpReadBuffer; (warned > 0) != capped {
		t.Errorf("%d warnings with %d bytes granted of %d asked", warned, want, udpReadBuffer)
	}
	// Past rmem_max: granted where clb may force it, else capped at it.
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want = 2 * rmemMax
	if os.Geteuid() != 0 {
		want = rmemMax
	}
	if got := setReadBuffer(c, 2*rmemMax); got != want {
		t.Errorf("asked %d bytes (rmem_max %d, uid %d): granted %d, want %d", 2*rmemMax, rmemMax, os.Geteuid(), got, want)
	}
}

// TestUDPGroupClaimed: a second clb process cannot join the SO_REUSEPORT
// group of a UDP listener another holds (the kernel would let it, for the
// same user, and spread the datagrams between the two), and the address is
// free again once the holder is killed.
func TestUDPGroupClaimed(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("several readers need SO_REUSEPORT (Linux)")
	}
	holder := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestUDPGroupHolder$", "-test.count=1")
	holder.Env = append(os.Environ(), "CLB_TEST_UDP_HOLDER=1")
	holder.WaitDelay = 10 * time.Second // bounds Wait, whatever the child does
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	holder.Stderr = os.Stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "holding "); ok {
				lines <- a
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- holder.Wait() // after the last read of stdout, as Wait asks
	}()
	t.Cleanup(func() { // on any return: the holder ends with its stdin
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(time.Minute):
			t.Error("the holder did not end within a minute of its stdin")
		}
	})
	var addr netip.AddrPort
	select {
	case a := <-lines:
		addr = netip.MustParseAddrPort(a)
	case err := <-exited:
		exited <- err
		t.Fatalf("the holder ended without listening: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the holder did not listen within a minute")
	}

	var wg sync.WaitGroup
	p := &Proxy{now: time.Now} // what steering the readers reads
	second := newUDPTransport(p, zap.NewNop(), 2, &wg)
	if err := second.listen(addr); err == nil || !strings.Contains(err.Error(), "another process (another clb?)") {
		second.close()
		t.Fatalf("a second process's listener on %s: %v, want refused as another's", addr, err)
	}
	if len(second.socks) != 0 || len(second.claims) != 0 {
		t.Errorf("the refused listener kept %d socket groups and %d claims", len(second.socks), len(second.claims))
	}
	// The same address written IPv4-mapped is the same claim.
	mapped := netip.AddrPortFrom(netip.AddrFrom16(addr.Addr().As16()), addr.Port())
	if err := second.listen(mapped); err == nil || !strings.Contains(err.Error(), "another process (another clb?)") {
		second.close()
		t.Fatalf("a second process's listener on %s (%s IPv4-mapped): %v, want refused as another's", mapped, addr, err)
	}

	// Killed, not asked: a clb that crashes leaves no claim behind.
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited: // reaped: its sockets are gone
		exited <- err
	case <-time.After(time.Minute):
		t.Fatal("the holder did not end within a minute of SIGKILL")
	}
	third := newUDPTransport(p, zap.NewNop(), 2, &wg)
	if err := third.listen(addr); err != nil {
		t.Fatalf("%s once its holder was killed: %v", addr, err)
	}
	third.close()
}

// TestUDPGroupHolder is TestUDPGroupClaimed's other process: it listens
// with two readers, prints the address and holds it until its stdin ends.
func TestUDPGroupHolder(t *testing.T) {
	if os.Getenv("CLB_TEST_UDP_HOLDER") == "" {
		t.Skip("TestUDPGroupClaimed runs it")
	}
	var wg sync.WaitGroup
	tr := newUDPTransport(&Proxy{now: time.Now}, zap.NewNop(), 2, &wg)
	if err := tr.listen(netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	fmt.Printf("holding %s\n", tr.self[0].addr)
	_, _ = io.Copy(io.Discard, os.Stdin)
}
