//go:build linux

// Command uring is bench/floor/gnet on io_uring instead of epoll: the same
// least work per request (bodiless requests forwarded unchanged to the back
// end the CLBKEY cookie hashes to, one upstream connection per client and
// back end, Content-Length responses), with every accept, connect, receive
// and send a ring entry, all of a loop's pass submitted and its completions
// reaped in one io_uring_enter. It tells how much of an epoll proxy's
// kernel time per request (a system call per receive and send, plus the
// waits) io_uring would spare, before any of clb moves onto it. One ring
// per loop, a loop per GOMAXPROCS on its own locked thread, each with its
// own SO_REUSEPORT listener. A benchmark tool: it trusts its peers, has no
// timeouts, and handles one request at a time per client.
//
// Flags take parts off the ring, to tell which part spares what:
// -pollmode waits for readiness (a multishot poll a connection, then
// recvfrom) rather than handing the kernel a receive; -syncsend sends by
// sendto at once; -batchsend by sendto at the end of a pass, just before
// the ring is entered. On the AMD EPYC machine (stop 31, alternating 5 s
// runs) -pollmode cost nothing (0.86x the gnet floor's CPU, as the whole
// ring), while -pollmode -syncsend and -pollmode -batchsend were 1.00x and
// 1.02x: the saving is the sends made in the call that then sleeps.
package main

import (
	"bytes"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"floor/wire"
)

// The kernel's io_uring ABI (include/uapi/linux/io_uring.h).
const (
	opAccept  = 13
	opConnect = 16
	opSend    = 26
	opRecv    = 27
	opPollAdd = 6
	cqeFMore  = 1 << 1

	setupCoopTaskrun  = 1 << 8
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13
	featSingleMmap    = 1 << 0
	enterGetEvents    = 1 << 0
	offSQRing         = 0
	offSQEs           = 0x10000000
)

type sqRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqRingOffsets
	cqOff                                                                  cqRingOffsets
}

type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFD    int32
	addr3       uint64
	pad         uint64
}

type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// ring is one io_uring: its submission and completion queues, mapped.
type ring struct {
	fd                     int
	sqHead, sqTail, sqMask *uint32
	sqArray                []uint32
	sqes                   []sqe
	cqHead, cqTail, cqMask *uint32
	cqes                   []cqe
	pending                uint32 // entries queued since the last enter
}

func newRing(entries uint32) (*ring, error) {
	var p params
	p.flags = setupSingleIssuer | setupDeferTaskrun | setupCoopTaskrun
	fd, _, e := syscall.RawSyscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, e
	}
	if p.features&featSingleMmap == 0 {
		return nil, syscall.ENOSYS
	}
	size := max(int(p.sqOff.array+p.sqEntries*4), int(p.cqOff.cqes+p.cqEntries*uint32(unsafe.Sizeof(cqe{}))))
	m, err := unix.Mmap(int(fd), offSQRing, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, err
	}
	s, err := unix.Mmap(int(fd), offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, err
	}
	at := func(off uint32) unsafe.Pointer { return unsafe.Pointer(&m[off]) }
	r := &ring{
		fd:     int(fd),
		sqHead: (*uint32)(at(p.sqOff.head)), sqTail: (*uint32)(at(p.sqOff.tail)), sqMask: (*uint32)(at(p.sqOff.ringMask)),
		sqArray: unsafe.Slice((*uint32)(at(p.sqOff.array)), p.sqEntries),
		sqes:    unsafe.Slice((*sqe)(unsafe.Pointer(&s[0])), p.sqEntries),
		cqHead:  (*uint32)(at(p.cqOff.head)), cqTail: (*uint32)(at(p.cqOff.tail)), cqMask: (*uint32)(at(p.cqOff.ringMask)),
		cqes: unsafe.Slice((*cqe)(at(p.cqOff.cqes)), p.cqEntries),
	}
	return r, nil
}

// queue is a free submission entry, cleared; the ring must have room (the
// loop never has more in flight than two an open connection plus accepts).
func (r *ring) queue() *sqe {
	tail := *r.sqTail // the loop's own: only it writes the tail
	if tail-atomic.LoadUint32(r.sqHead) == uint32(len(r.sqes)) {
		r.enter(0) // full: submit what is queued
	}
	i := tail & *r.sqMask
	e := &r.sqes[i]
	*e = sqe{}
	r.sqArray[i] = i
	atomic.StoreUint32(r.sqTail, tail+1)
	r.pending++
	return e
}

// enter submits what is queued and waits for at least wait completions.
func (r *ring) enter(wait uint32) {
	for {
		_, _, e := syscall.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.pending), uintptr(wait), enterGetEvents, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 && e != syscall.EBUSY && e != syscall.EAGAIN {
			log.Fatalf("io_uring_enter: %v", e)
		}
		r.pending = 0
		return
	}
}

// Operations, in a completion's user data beside the connection's index.
const (
	doAccept = iota
	doConnect
	doClientRecv
	doClientSend
	doUpRecv
	doUpSend
	doPoll
)

type conn struct {
	fd   int
	buf  []byte // what was received and not yet forwarded
	up   []*conn
	peer *conn // upstream: its client; client: the upstream it awaits
	out  []byte
	sa   unix.RawSockaddrInet4
	open bool
	idx  int

	want             int // pollmode: the recv op awaited
	polled, readable bool
}

type loop struct {
	r     *ring
	ln    int
	ups   []unix.RawSockaddrInet4
	conns []*conn
	free  []int
	later []deferred
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "listen address")
	backends := flag.String("backends", "127.0.0.1:18081,127.0.0.1:18082,127.0.0.1:18083", "back ends, comma-separated")
	probe := flag.Bool("probe", false, "exit 0 if this kernel gives a ring of the flags used, else 1")
	flag.Parse()
	if *probe {
		runtime.LockOSThread()
		if _, err := newRing(8); err != nil {
			log.Fatalf("io_uring_setup: %v", err)
		}
		return
	}
	var ups []unix.RawSockaddrInet4
	for _, b := range strings.Split(*backends, ",") {
		a, err := net.ResolveTCPAddr("tcp", b)
		if err != nil {
			log.Fatal(err)
		}
		ups = append(ups, rawAddr(a))
	}
	la, err := net.ResolveTCPAddr("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	var lns []int
	for range runtime.GOMAXPROCS(0) {
		l := &loop{ups: ups}
		if l.ln, err = listen(rawAddr(la)); err != nil {
			log.Fatal(err)
		}
		lns = append(lns, l.ln)
		go l.run()
	}
	// On SIGTERM stop listening at once: an accept pending in a ring holds
	// its socket open past the process's end while the kernel tears the
	// ring down, and the next balancer on the port would share it.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	for _, ln := range lns {
		_ = unix.Shutdown(ln, unix.SHUT_RDWR)
	}
	os.Exit(0)
}

func rawAddr(a *net.TCPAddr) unix.RawSockaddrInet4 {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(a.Port>>8), byte(a.Port)
	copy(sa.Addr[:], a.IP.To4())
	return sa
}

func listen(sa unix.RawSockaddrInet4) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	port := int(sa.Port>>8 | sa.Port<<8)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: sa.Addr}); err != nil {
		return -1, err
	}
	return fd, unix.Listen(fd, 4096)
}

func (l *loop) add(c *conn) *conn {
	if k := len(l.free); k > 0 {
		c.idx, l.free = l.free[k-1], l.free[:k-1]
		l.conns[c.idx] = c
	} else {
		c.idx = len(l.conns)
		l.conns = append(l.conns, c)
	}
	return c
}

func (l *loop) closeConn(c *conn) {
	if c == nil || c.fd < 0 {
		return
	}
	unix.Close(c.fd)
	c.fd = -1
	l.conns[c.idx] = nil
	l.free = append(l.free, c.idx)
}

func data(c *conn, op int) uint64 { return uint64(c.idx)<<8 | uint64(op) }

func (l *loop) accept() {
	e := l.r.queue()
	e.opcode, e.fd, e.opFlags, e.userData = opAccept, int32(l.ln), unix.SOCK_CLOEXEC, uint64(1<<63)|doAccept
}

var pollMode = flag.Bool("pollmode", false, "readiness by multishot poll, recvfrom on it (experiment)")

func (l *loop) recv(c *conn, op int) {
	if cap(c.buf)-len(c.buf) < 4096 {
		c.buf = append(c.buf, make([]byte, 16384)...)[:len(c.buf)]
	}
	free := c.buf[len(c.buf):cap(c.buf)]
	if *pollMode {
		c.want = op
		if !c.polled {
			l.poll(c)
		}
		if c.readable {
			l.pollRead(c)
		}
		return
	}
	e := l.r.queue()
	e.opcode, e.fd, e.addr, e.len, e.userData = opRecv, int32(c.fd), uint64(uintptr(unsafe.Pointer(&free[0]))), uint32(len(free)), data(c, op)
}

var syncSend = flag.Bool("syncsend", false, "send by sendto, not the ring (experiment)")

var batchSend = flag.Bool("batchsend", false, "sends by sendto at the end of a pass (experiment)")

type deferred struct {
	c  *conn
	b  []byte
	op int
}

// poll arms a multishot poll for input on c (-pollmode).
func (l *loop) poll(c *conn) {
	c.polled = true
	e := l.r.queue()
	e.opcode, e.fd, e.len, e.opFlags, e.userData = opPollAdd, int32(c.fd), 1, unix.POLLIN, data(c, doPoll)
}

func (l *loop) sendDeferred() {
	for _, d := range l.later {
		l.sendNow(d.c, d.b, d.op)
	}
	clear(l.later)
	l.later = l.later[:0]
}

func (l *loop) send(c *conn, b []byte, op int) {
	c.out = b
	switch {
	case *batchSend:
		l.later = append(l.later, deferred{c, b, op})
	case *syncSend:
		l.sendNow(c, b, op)
	default:
		l.ringSend(c, b, op)
	}
}

// sendNow sends b by sendto; what the socket does not take (or all of it,
// on an error the ring then reports) goes on the ring.
func (l *loop) sendNow(c *conn, b []byte, op int) {
	n, _, e := syscall.RawSyscall6(unix.SYS_SENDTO, uintptr(c.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_NOSIGNAL, 0, 0)
	if e == 0 {
		if b = b[n:]; len(b) == 0 {
			return
		}
		c.out = b
	}
	l.ringSend(c, b, op)
}

func (l *loop) ringSend(c *conn, b []byte, op int) {
	e := l.r.queue()
	e.opcode, e.fd, e.addr, e.len, e.opFlags, e.userData = opSend, int32(c.fd), uint64(uintptr(unsafe.Pointer(&b[0]))), uint32(len(b)), unix.MSG_NOSIGNAL, data(c, op)
}

func (l *loop) run() {
	// The ring is single-issuer: made and entered on this thread only.
	runtime.LockOSThread()
	var err error
	if l.r, err = newRing(1024); err != nil {
		log.Fatalf("io_uring_setup: %v", err)
	}
	l.accept()
	for {
		l.sendDeferred()
		l.r.enter(1)
		head := *l.r.cqHead
		for tail := atomic.LoadUint32(l.r.cqTail); head != tail; head++ {
			c := l.r.cqes[head&*l.r.cqMask]
			l.complete(c.userData, int(c.res), c.flags)
		}
		atomic.StoreUint32(l.r.cqHead, head)
	}
}

// pollRead reads what c's poll said is there, for the recv it wants.
func (l *loop) pollRead(c *conn) {
	if c.want == 0 {
		c.readable = true
		return
	}
	free := c.buf[len(c.buf):cap(c.buf)]
	n, _, e := syscall.RawSyscall6(unix.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(&free[0])), uintptr(len(free)), 0, 0, 0)
	if e == syscall.EAGAIN {
		c.readable = false
		return
	}
	c.readable = int(n) == len(free) // short: drained; the poll tells of more
	op := c.want
	c.want = 0
	res := int(n)
	if e != 0 {
		res = -int(e)
	}
	l.complete(data(c, op), res, 0)
}

func (l *loop) complete(ud uint64, res int, flags uint32) {
	op := int(ud & 0xff)
	if op == doPoll {
		c := l.conns[ud>>8&(1<<55-1)]
		if c == nil {
			return
		}
		if flags&cqeFMore == 0 { // the kernel ended it: again
			c.polled = false
			if c.fd >= 0 {
				l.poll(c)
			}
		}
		l.pollRead(c)
		return
	}
	if op == doAccept {
		l.accept()
		if res >= 0 {
			_ = unix.SetsockoptInt(res, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			c := l.add(&conn{fd: res, up: make([]*conn, len(l.ups))})
			l.recv(c, doClientRecv)
		}
		return
	}
	c := l.conns[ud>>8&(1<<55-1)]
	if c == nil {
		return
	}
	switch op {
	case doClientRecv:
		if res <= 0 {
			for _, u := range c.up {
				l.closeConn(u)
			}
			l.closeConn(c)
			return
		}
		c.buf = c.buf[:len(c.buf)+res]
		l.request(c)
	case doConnect:
		if res < 0 {
			l.closeConn(c.peer)
			l.closeConn(c)
			return
		}
		c.open = true
		l.forward(c)
	case doUpSend, doClientSend:
		if res < 0 {
			l.closeConn(c)
			return
		}
		if res < len(c.out) {
			l.send(c, c.out[res:], op)
		}
	case doUpRecv:
		if res <= 0 {
			l.closeConn(c.peer)
			l.closeConn(c)
			return
		}
		c.buf = c.buf[:len(c.buf)+res]
		l.response(c)
	}
}

// request forwards the client's request head once it is whole.
func (l *loop) request(cl *conn) {
	end := bytes.Index(cl.buf, []byte("\r\n\r\n"))
	if end < 0 {
		l.recv(cl, doClientRecv)
		return
	}
	n := end + 4
	i := wire.Pick(cl.buf[:n], len(l.ups))
	u := cl.up[i]
	if u == nil {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			l.closeConn(cl)
			return
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		u = l.add(&conn{fd: fd, peer: cl, sa: l.ups[i]})
		cl.up[i] = u
		e := l.r.queue()
		e.opcode, e.fd, e.addr, e.off, e.userData = opConnect, int32(fd), uint64(uintptr(unsafe.Pointer(&u.sa))), uint64(unsafe.Sizeof(u.sa)), data(u, doConnect)
	}
	u.out = append(u.out[:0], cl.buf[:n]...)
	cl.buf = cl.buf[:copy(cl.buf, cl.buf[n:])]
	cl.peer = u
	if u.open {
		l.forward(u)
	}
}

// forward sends the request queued for upstream u and awaits its response.
func (l *loop) forward(u *conn) {
	l.send(u, u.out, doUpSend)
	l.recv(u, doUpRecv)
}

// response relays a whole response to the client, then the client's next
// request.
func (l *loop) response(u *conn) {
	end := bytes.Index(u.buf, []byte("\r\n\r\n"))
	if end < 0 {
		l.recv(u, doUpRecv)
		return
	}
	n := end + 4 + wire.ContentLength(u.buf[:end+4])
	if len(u.buf) < n {
		l.recv(u, doUpRecv)
		return
	}
	cl := u.peer
	cl.out = append(cl.out[:0], u.buf[:n]...)
	u.buf = u.buf[:copy(u.buf, u.buf[n:])]
	l.send(cl, cl.out, doClientSend)
	l.request(cl)
}
