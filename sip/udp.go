package sip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"

	"go.uber.org/zap"
)

// udpBatch is how many datagrams a reader takes from its socket in one
// system call (recvmmsg), and so at most how many it sends in one
// (sendmmsg) once it has handled them: one datagram comes in per call
// when the socket is quiet, up to udpBatch when it is busy.
const udpBatch = 16

// udpTransport is SIP over UDP: a datagram a message, read and sent in
// batches, each listener served by one socket per reader (several share
// the listener's address with SO_REUSEPORT, and the kernel spreads the
// peers among them).
type udpTransport struct {
	proxy   *Proxy
	log     *zap.Logger
	readers int
	wg      *sync.WaitGroup // the Server's

	socks  [][]udpSocket // socks[i] serve listener i, a reader each
	steers []*steer      // steers[i] steers socks[i]; nil for one socket
	self   []endpoint    // self[i] is listener i's
	claims []io.Closer   // the SO_REUSEPORT groups this transport holds
}

// udpSocket is one socket and what its batches of datagrams are read and
// written with (udpbatch_linux.go: recvmmsg and sendmmsg).
type udpSocket struct {
	c      *net.UDPConn
	sys    sysSocket
	rcvbuf int // receive buffer the kernel granted, bytes; 0 unknown
}

// udpReadBuffer is the receive buffer asked for each UDP socket: what
// absorbs a burst while the reader is busy or not scheduled (some 100 ms of
// 40,000 small datagrams a second). Past it the kernel drops datagrams,
// legitimate ones with the flood.
const udpReadBuffer = 4 << 20

// datagrams is a batch of datagrams for one system call.
type datagrams struct {
	bufs  [][]byte         // read into (each of its full length), or sent
	n     []int            // read: the bytes in bufs[i]
	peers []netip.AddrPort // read: the sender; sent: the destination
	sys   sysBatch         // the system's headers, reused
}

func newDatagrams(n int) datagrams {
	return datagrams{bufs: make([][]byte, n), n: make([]int, n), peers: make([]netip.AddrPort, n), sys: newSysBatch(n)}
}

func newUDPTransport(proxy *Proxy, log *zap.Logger, readers int, wg *sync.WaitGroup) *udpTransport {
	return &udpTransport{proxy: proxy, log: log, readers: max(readers, 1), wg: wg}
}

func (t *udpTransport) name() string { return "udp" }

func (t *udpTransport) selves() []endpoint { return t.self }

func (t *udpTransport) listen(addr netip.AddrPort) error {
	shared := t.readers > 1
	// A known port is claimed before any socket joins its group; port 0
	// once the kernel has chosen it (no other process can know it yet).
	var claim io.Closer
	var err error
	if shared && addr.Port() != 0 {
		if claim, err = claimGroup(localAddrPort(addr)); err != nil {
			return err
		}
	}
	release := func() {
		if claim != nil {
			claim.Close()
		}
	}
	first, err := listenUDP(addr, shared)
	if err != nil {
		release()
		return err
	}
	self := endpoint{"udp", localAddr(first.c.LocalAddr())}
	if first.rcvbuf > 0 && first.rcvbuf < udpReadBuffer {
		t.log.Warn("the kernel capped the UDP receive buffer: a burst past it is dropped; raise net.core.rmem_max (or run clb with CAP_NET_ADMIN)",
			zap.Stringer("listener", self.addr), zap.Int("bytes", first.rcvbuf), zap.Int("asked", udpReadBuffer))
	}
	if shared && claim == nil {
		if claim, err = claimGroup(self.addr); err != nil {
			first.c.Close()
			return err
		}
	}
	group := []udpSocket{first}
	for len(group) < t.readers {
		// The others on the first's address: its port once 0 is resolved.
		s, err := listenUDP(self.addr, shared)
		if err != nil {
			for _, s := range group {
				s.c.Close()
			}
			release()
			return err
		}
		group = append(group, s)
	}
	if claim != nil {
		t.claims = append(t.claims, claim)
	}
	t.socks = append(t.socks, group)
	var st *steer
	if len(group) > 1 {
		st = newSteer(group, t.proxy.now, t.log)
	}
	t.steers = append(t.steers, st)
	t.self = append(t.self, self)
	return nil
}

// listenUDP binds a socket, with SO_REUSEPORT when shared.
func listenUDP(addr netip.AddrPort, shared bool) (udpSocket, error) {
	var lc net.ListenConfig
	if shared {
		lc.Control = reusePort
	}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr.String())
	if err != nil {
		return udpSocket{}, err
	}
	c := pc.(*net.UDPConn)
	rcvbuf := setReadBuffer(c, udpReadBuffer)
	_ = c.SetWriteBuffer(4 << 20)
	sys, err := newSysSocket(c)
	if err != nil {
		c.Close()
		return udpSocket{}, err
	}
	return udpSocket{c, sys, rcvbuf}, nil
}

func (t *udpTransport) serve() {
	for i, group := range t.socks {
		for k := range group {
			t.wg.Go(func() { t.read(i, k) })
		}
	}
}

func (t *udpTransport) close() {
	for _, group := range t.socks {
		for _, s := range group {
			s.c.Close()
		}
	}
	for _, c := range t.claims {
		c.Close()
	}
	t.claims = nil
}

func (t *udpTransport) connWith(netip.AddrPort) conn { return nil }

func (t *udpTransport) send(addr netip.AddrPort, data []byte) error {
	i := pick(t.self, addr.Addr())
	if i < 0 {
		return fmt.Errorf("no UDP listener for %s", addr)
	}
	_, err := t.socks[i][0].c.WriteToUDPAddrPort(data, addr)
	return err
}

// read is the reader of socket k of listener i.
func (t *udpTransport) read(i, k int) {
	s, self := &t.socks[i][k], t.self[i]
	slab := make([]byte, udpBatch*maxMessage)
	d := newDatagrams(udpBatch)
	for j := range d.bufs {
		d.bufs[j] = slab[j*maxMessage : (j+1)*maxMessage]
	}
	sc := scratch{batch: newSendBatch(t, i, k)}
	st, streak := t.steers[i], 0
	for {
		n, err := s.readBatch(&d)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("udp read", zap.Error(err))
			continue
		}
		var woke int64
		if st != nil {
			woke = st.woke(k, n, &streak)
		}
		for j := range n {
			data := d.bufs[j][:d.n[j]]
			if !d.peers[j].IsValid() || len(data) == 0 || isKeepAlive(data) {
				continue
			}
			in := inbound{data: data, local: self, src: d.peers[j]}
			t.proxy.handle(&in, &sc)
		}
		sc.batch.flush(t.proxy)
		if st != nil {
			st.done(k, woke)
		}
	}
}

// maxReaders bounds the default number of readers of a UDP listener: past
// a few, more sockets only split the same traffic finer.
const maxReaders = 8

// sendBatch is a reader's datagrams to send, queued while it handles what
// one read brought and sent together (sendmmsg) when it is done. It owns
// the buffers they are in: queueing one gives the reader another to build
// the next message in.
type sendBatch struct {
	t       *udpTransport
	own     [2]int    // the reader's listener and socket: what it sends from
	n       int       // queued: out.bufs[:n], pending[:n]
	out     datagrams // reused
	pending []pendingSend
	spare   [][]byte
}

// pendingSend is the socket a queued datagram leaves by and what a
// failure to send it is reported with.
type pendingSend struct {
	sock     *udpSocket
	instance string // the instance it goes to, "" if none
	counted  bool   // a request forwarded: a failure counts as a send error
}

func newSendBatch(t *udpTransport, listener, socket int) *sendBatch {
	return &sendBatch{t: t, own: [2]int{listener, socket}, out: newDatagrams(udpBatch), pending: make([]pendingSend, udpBatch)}
}

// queue takes data (the reader's out buffer) to send to addr at the next
// flush and returns a buffer for the reader to build the next message in;
// ok is false, and nothing is taken, when it must be sent at once (no
// listener of addr's family to send it from).
func (b *sendBatch) queue(addr netip.AddrPort, data []byte, instance string, counted bool) (next []byte, ok bool) {
	i := pick(b.t.self, addr.Addr())
	if i < 0 || b.t.self[i].addr.Addr().Is4() != addr.Addr().Is4() {
		return data, false
	}
	sock := &b.t.socks[i][0]
	if i == b.own[0] {
		sock = &b.t.socks[i][b.own[1]]
	}
	if b.n == len(b.pending) {
		b.flush(b.t.proxy)
	}
	j := b.n
	b.n++
	b.out.bufs[j], b.out.peers[j] = data, addr
	b.pending[j] = pendingSend{sock: sock, instance: instance, counted: counted}
	if n := len(b.spare); n > 0 {
		next, b.spare = b.spare[n-1][:0], b.spare[:n-1]
		return next, true
	}
	return nil, true
}

// flush sends what is queued, a system call per run of datagrams leaving
// by one socket, and reports each datagram that could not be sent.
func (b *sendBatch) flush(p *Proxy) {
	for start := 0; start < b.n; {
		sock := b.pending[start].sock
		end := start + 1
		for end < b.n && b.pending[end].sock == sock {
			end++
		}
		for start < end {
			n, err := sock.writeBatch(&b.out, start, end)
			start += n
			if start < end && (err != nil || n == 0) {
				// sendmmsg stops at the first datagram it cannot send.
				if err == nil {
					err = errors.New("sendmmsg sent nothing")
				}
				ps := b.pending[start]
				p.sendFailed(destination{endpoint: endpoint{"udp", b.out.peers[start]}}, ps.instance, ps.counted, err)
				start++
			}
		}
	}
	for j := range b.n {
		if buf := b.out.bufs[j]; cap(buf) <= maxKeptBuffer {
			b.spare = append(b.spare, buf)
		}
		b.out.bufs[j], b.pending[j] = nil, pendingSend{}
	}
	b.n = 0
}

// maxKeptBuffer bounds the buffers a batch keeps for the next messages: a
// rare large message's buffer is left to the collector.
const maxKeptBuffer = 8 << 10

// isKeepAlive reports a datagram of only CR and LF (RFC 5626 keep-alive).
func isKeepAlive(b []byte) bool {
	for _, c := range b {
		if c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}
