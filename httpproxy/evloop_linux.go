//go:build linux

package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"clb/metrics"
	"clb/rawtcp"
)

// Plain HTTP/1.1 on event loops: one loop per GOMAXPROCS, each an epoll
// set of its own, serving its connections' common exchange itself (a
// whole head read, no body or a small one all read, an http:// instance
// with an IP address, a response with a Content-Length body that fits
// the instance connection's buffer) with the same functions the goroutine
// path uses (prepare, appendRequest, relay, the pool). Anything else is
// handed to a goroutine at a point where what is left is plain blocking
// code of that path (handOff); it comes back to a loop when its request
// is done (carryOn). Why: a goroutine per connection parks and is woken
// for every read; a loop reads whatever is ready in one pass.
//
// A loop waits in Go's poller on its epoll descriptor rather than in
// epoll_wait: a quiet loop is a parked goroutine, holding no thread or P,
// and a busy one polls its set without a system call that blocks.

// errAgain: a loop's socket has nothing to read now.
var errAgain = errors.New("httpproxy: no data yet")

// handReason is why a loop handed a connection to a goroutine.
type handReason int

const (
	handHead     handReason = iota // a head not all read in one go, or too large
	handBody                       // a body not all read, chunked, or Expect
	handUpgrade                    // Connection: upgrade
	handInstance                   // an https:// instance, or one named by host name
	handFailed                     // the attempt failed before a response (dial, write, close, timeout)
	handResponse                   // a response the loop does not relay itself
	handReasons
)

// loops are a Server's event loops: none until Serve starts them.
type loops struct {
	s       *Server
	started chan struct{} // closed once start has run
	all     []*loop
	next    atomic.Uint32
	handed  [handReasons]atomic.Int64 // hand-offs by reason
}

// relays is the number of responses relayed in the loops.
func (ls *loops) relays() (n int64) {
	for _, l := range ls.all {
		n += l.relays.Load()
	}
	return n
}

// loop is one event loop. Only its goroutine touches conns and the
// connections in it; other goroutines reach it through ops.
type loop struct {
	s    *Server
	ls   *loops
	idx  int // its pool key's loop
	epfd int
	efd  int      // eventfd: ops are waiting
	epf  *os.File // epfd in Go's poller
	rc   syscall.RawConn
	wait func(fd uintptr) bool
	ev   []unix.EpollEvent
	evc  []*fdConn // ev's connections, found in a pass's first round
	nev  int

	conns   map[uint64]*fdConn // by id, the epoll events' data
	lastID  uint64
	clock   func() time.Time
	now     time.Time // read once per pass
	timers  [timers]timerList
	sweepAt time.Time    // the nearest deadline, or one before it (zero: none)
	armed   time.Time    // the sweepAt the poller's deadline was set for
	relays  atomic.Int64 // responses relayed here (the loop's own line: no sharing)
	// emptyReads are reads of an instance connection that found nothing:
	// each a system call for nothing (tests: no probe before reuse).
	emptyReads int64
	swept      int64 // connections a sweep looked at (tests: not all of them)

	mu      sync.Mutex
	ops     []loopOp
	spare   []loopOp
	stopped bool
	done    chan struct{}
}

// loopOp is work for a loop from another goroutine: a connection to take
// (adopt), one to close, a function to run there (do), or stop.
type loopOp struct {
	c           *fdConn
	close, stop bool
	fn          func()
}

// phase is where a loop's connection is.
type phase uint8

const (
	cIdle     phase = iota // client: waiting for a request
	cHead                  // client: a request has begun (bytes buffered)
	cExchange              // client: its request is with an instance
	cFlush                 // client: a response is going out, the connection stays
	cClosing               // client: a response is going out, then close
	uIdle                  // instance: in the pool
	uConnect               // instance: connecting
	uWrite                 // instance: the request is going out
	uAwait                 // instance: the response head is awaited
	uBody                  // instance: the head is read, the body awaited
)

// fdConn is a socket a loop owns. It is a net.Conn for the code the loops
// share with the goroutine path: reads that would block fail with
// errAgain, writes never block (what the socket does not take waits in
// pending, and the loop stops reading until it is gone), deadlines are
// the loop's own.
type fdConn struct {
	l       *loop
	id      uint64
	fd      int
	closing atomic.Bool // Close was called: the loop closes it
	closed  bool        // the loop's: fd closed or given away
	handed  net.Conn    // what a client became in a goroutine
	events  uint32      // registered
	pending []byte
	werr    error
	phase   phase

	deadline      time.Time
	timer         *timerList // the list deadline is in; nil: none
	tprev, tnext  *fdConn
	local, remote net.Addr

	// A client's.
	cc        *clientConn
	idleEnd   time.Time
	parkAt    time.Time
	headStart time.Time
	canPark   bool
	eof       bool
	r         request
	logged    bool
	x         *exchange
	up        *fdConn

	// An instance's.
	upc    *upConn
	owner  *fdConn
	key    poolKey
	reused bool
	sent   time.Time
	rf     framing
	rfErr  error
}

func newLoops(s *Server) *loops { return &loops{s: s, started: make(chan struct{})} }

// start opens and runs the loops, one per GOMAXPROCS (Serve), if on;
// where that fails, every connection has a goroutine.
func (ls *loops) start(on bool) {
	if ls == nil {
		return
	}
	defer close(ls.started)
	if !on {
		return
	}
	for i := range runtime.GOMAXPROCS(0) {
		l, err := newLoop(ls.s, ls, i+1)
		if err != nil {
			ls.s.log.Warn("plain HTTP served by a goroutine per connection: no event loops", zap.Error(err))
			for _, l := range ls.all {
				l.epf.Close()
				unix.Close(l.efd)
			}
			ls.all = nil
			return
		}
		if ls.s.loopClock != nil {
			l.clock = ls.s.loopClock
		}
		ls.all = append(ls.all, l)
	}
	for _, l := range ls.all {
		go l.run()
	}
}

func newLoop(s *Server, ls *loops, idx int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // data 0: the eventfd
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(efd)
		unix.Close(epfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(efd)
		unix.Close(epfd)
		return nil, err
	}
	epf := os.NewFile(uintptr(epfd), "epoll") // non-blocking: in Go's poller
	rc, err := epf.SyscallConn()
	if err != nil {
		epf.Close()
		unix.Close(efd)
		return nil, err
	}
	l := &loop{
		s: s, ls: ls, idx: idx, epfd: epfd, efd: efd, epf: epf, rc: rc,
		ev: make([]unix.EpollEvent, 128), evc: make([]*fdConn, 128), conns: map[uint64]*fdConn{},
		clock: time.Now, done: make(chan struct{}),
	}
	l.wait = l.poll
	return l, nil
}

// poll takes what is ready without waiting; false has the poller wait for
// the set to become readable.
func (l *loop) poll(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&l.ev[0])), uintptr(len(l.ev)), 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			l.nev = 0
			return false
		}
		l.nev = int(n)
		return n > 0
	}
}

// adopt takes a plain client connection from its goroutine (accepted, woken
// from parking, or done with a request handed off), idle until idleEnd:
// tc is closed, a duplicate of its socket goes to a loop. False: it could
// not be taken, and tc is as it was.
func (ls *loops) adopt(cc *clientConn, tc *net.TCPConn, idleEnd time.Time) bool {
	if ls == nil || len(ls.all) == 0 {
		return false
	}
	fd, err := dupFD(tc)
	if err != nil {
		return false
	}
	// A connection stays with its first loop, where its instance
	// connections are.
	if cc.home == 0 {
		cc.home = 1 + int(ls.next.Add(1)%uint32(len(ls.all)))
	}
	l := ls.all[cc.home-1]
	c := &fdConn{l: l, fd: fd, cc: cc, local: tc.LocalAddr(), remote: tc.RemoteAddr(), idleEnd: idleEnd, canPark: true}
	tc.Close()
	cc.dc = newDeadlineConn(c)
	l.s.setConn(cc, c)
	if !l.enqueue(loopOp{c: c}) {
		unix.Close(fd)
		c.closed = true
		c.closing.Store(true)
		l.s.closeConn(cc)
	}
	return true
}

func dupFD(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, dupErr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, dupErr
}

// stop ends the loops once the Server has no client connections left: the
// instance connections they hold are closed.
func (ls *loops) stop() {
	if ls == nil {
		return
	}
	for _, l := range ls.all {
		l.enqueue(loopOp{stop: true})
	}
	for _, l := range ls.all {
		<-l.done
	}
}

// do runs f in each loop, one after another, and returns when all have:
// what f reads of a loop's connections is then what the loop sees (tests).
// False: the loops have stopped.
func (ls *loops) do(f func(l *loop)) bool {
	<-ls.started
	if len(ls.all) == 0 {
		return false
	}
	for _, l := range ls.all {
		done := make(chan struct{})
		if !l.enqueue(loopOp{fn: func() { f(l); close(done) }}) {
			return false
		}
		<-done
	}
	return true
}

// enqueue hands op to the loop; false: it has stopped.
func (l *loop) enqueue(op loopOp) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	l.ops = append(l.ops, op)
	if len(l.ops) == 1 {
		one := [8]byte{1}
		_, _ = unix.Write(l.efd, one[:]) // under mu: exit closes efd under it
	}
	return true
}

func (l *loop) run() {
	defer l.exit()
	for {
		err := l.rc.Read(l.wait)
		l.now = l.clock()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			l.s.log.Error("http event loop failed: its connections are closed", zap.Error(err))
			return
		}
		l.events()
		if l.takeOps() {
			return
		}
		if !l.sweepAt.IsZero() && !l.now.Before(l.sweepAt) {
			l.sweep()
		}
		if l.armed != l.sweepAt || errors.Is(err, os.ErrDeadlineExceeded) {
			// The poller's deadline, in real time (the loop's clock may be
			// a test's).
			var d time.Time
			if !l.sweepAt.IsZero() {
				d = time.Now().Add(max(l.sweepAt.Sub(l.now), time.Millisecond))
			}
			_ = l.epf.SetReadDeadline(d)
			l.armed = l.sweepAt
		}
	}
}

func (l *loop) exit() {
	l.mu.Lock()
	l.stopped = true
	ops := l.ops
	l.ops = nil
	unix.Close(l.efd)
	l.mu.Unlock()
	for _, op := range ops {
		if op.fn != nil {
			op.fn()
		}
		if op.c != nil && !op.close && op.c.cc != nil {
			unix.Close(op.c.fd)
			op.c.closed = true
			op.c.closing.Store(true)
			l.s.closeConn(op.c.cc)
		}
	}
	for _, c := range l.conns {
		if c.cc != nil {
			l.closeClient(c)
		} else {
			l.closeUp(c)
		}
	}
	l.epf.Close()
	close(l.done)
}

// takeOps does the work other goroutines left; true: stop.
func (l *loop) takeOps() (stop bool) {
	l.mu.Lock()
	ops := l.ops
	l.ops = l.spare[:0]
	l.mu.Unlock()
	for _, op := range ops {
		switch {
		case op.stop:
			stop = true
		case op.fn != nil:
			op.fn()
		case op.close:
			l.closeReq(op.c)
		default:
			l.add(op.c)
		}
	}
	clear(ops)
	l.spare = ops[:0]
	return stop
}

func (l *loop) newID() uint64 {
	l.lastID++
	return l.lastID
}

func (l *loop) epollEvent(c *fdConn, events uint32) *unix.EpollEvent {
	return &unix.EpollEvent{Events: events, Fd: int32(uint32(c.id)), Pad: int32(uint32(c.id >> 32))}
}

// add takes an adopted client.
func (l *loop) add(c *fdConn) {
	c.id = l.newID()
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.fd, l.epollEvent(c, unix.EPOLLIN)); err != nil {
		unix.Close(c.fd)
		c.closed = true
		c.closing.Store(true)
		l.s.closeConn(c.cc)
		return
	}
	c.events = unix.EPOLLIN
	l.conns[c.id] = c
	l.await(c)
	l.serve(c)
}

// events acts on a pass's events in two rounds: first those of idle
// pooled instance connections (closed by the instance, or bytes no
// request asked for: out of the pool, closed), then the rest. So a
// request of this pass never takes a pooled connection whose end the
// set has already reported, and the pool hands them out without a probe
// read. One the instance closes after the set was read is the same race
// as after a probe: the attempt fails before any byte of a response, and
// is retried on a new connection as a reused one (attemptFailed, retry).
func (l *loop) events() {
	evs, evc := l.ev[:l.nev], l.evc[:l.nev]
	l.nev = 0
	for i, ev := range evs {
		id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
		evc[i] = nil
		if id == 0 {
			var b [8]byte
			_, _ = unix.Read(l.efd, b[:])
			continue
		}
		c := l.conns[id]
		switch {
		case c == nil || c.closing.Load():
		case c.cc == nil && c.phase == uIdle:
			l.upEvent(c, ev.Events)
		default:
			evc[i] = c
		}
	}
	for i, c := range evc {
		if c != nil {
			l.event(c, evs[i].Events)
			evc[i] = nil
		}
	}
}

func (l *loop) event(c *fdConn, events uint32) {
	if c.closed || c.closing.Load() {
		return // closed by an event before it in this pass
	}
	if c.cc != nil {
		l.clientEvent(c, events)
		l.serve(c)
		return
	}
	owner := c.owner
	l.upEvent(c, events)
	if owner != nil {
		l.serve(owner)
	}
}

// closeReq closes a connection whose Close was called elsewhere.
func (l *loop) closeReq(c *fdConn) {
	switch {
	case c.closed:
		if c.handed != nil {
			c.handed.Close()
		}
	case c.cc != nil:
		l.closeClient(c)
	default:
		l.closeUp(c)
	}
}

func (l *loop) closeClient(c *fdConn) {
	if c.closed {
		return
	}
	if c.up != nil {
		l.closeUp(c.up)
	}
	c.closed = true
	c.closing.Store(true)
	l.forget(c)
	unix.Close(c.fd)
	c.pending = nil
	l.s.closeConn(c.cc)
}

func (l *loop) closeUp(u *fdConn) {
	if u.closed {
		return
	}
	u.closed = true
	u.closing.Store(true)
	l.forget(u)
	unix.Close(u.fd)
	if u.upc != nil && u.upc.rwBuffers != nil {
		l.s.pool.giveBuffers(u.upc)
	}
	if u.owner != nil {
		u.owner.up = nil
		u.owner = nil
	}
}

// forget takes c out of the loop's connections and deadlines.
func (l *loop) forget(c *fdConn) {
	delete(l.conns, c.id)
	l.clearDeadline(c)
}

// A loop keeps its deadlines in one list per timeout, each in the order
// they fall: a timeout's deadlines are set mostly in that order (now plus
// the timeout), so putting one in its place from the list's tail is a
// step or none as a rule, and a sweep takes only what has passed, from the
// heads, where walking every connection at each deadline was O(n) (libev's
// lists for timeouts alike).
type timer uint8

const (
	tIdle     timer = iota // a client's IdleTimeout
	tLinger                // a client's linger before it is parked
	tWrite                 // WriteTimeout, to a client or an instance
	tDial                  // DialTimeout
	tResponse              // ResponseTimeout: the head, then each read of the body
	timers
)

// timerList is the connections with a deadline of one timeout, the
// nearest first.
type timerList struct{ head, tail *fdConn }

// setDeadline sets c's deadline of timeout k, and the loop's nearest.
func (l *loop) setDeadline(c *fdConn, t time.Time, k timer) {
	l.clearDeadline(c)
	if t.IsZero() {
		return
	}
	c.deadline = t
	list := &l.timers[k]
	at := list.tail
	for at != nil && t.Before(at.deadline) {
		at = at.tprev
	}
	// After at (nil: first).
	c.timer, c.tprev = list, at
	if at == nil {
		c.tnext, list.head = list.head, c
	} else {
		c.tnext, at.tnext = at.tnext, c
	}
	if c.tnext == nil {
		list.tail = c
	} else {
		c.tnext.tprev = c
	}
	if l.sweepAt.IsZero() || t.Before(l.sweepAt) {
		l.sweepAt = t
	}
}

// clearDeadline takes c's deadline away, if it has one.
func (l *loop) clearDeadline(c *fdConn) {
	list := c.timer
	c.deadline = time.Time{}
	if list == nil {
		return
	}
	if c.tprev == nil {
		list.head = c.tnext
	} else {
		c.tprev.tnext = c.tnext
	}
	if c.tnext == nil {
		list.tail = c.tprev
	} else {
		c.tnext.tprev = c.tprev
	}
	c.timer, c.tprev, c.tnext = nil, nil, nil
}

// sweep acts on the deadlines passed and finds the nearest one left.
func (l *loop) sweep() {
	l.sweepAt = time.Time{}
	for k := range l.timers {
		list := &l.timers[k]
		for c := list.head; c != nil && !l.now.Before(c.deadline); c = list.head {
			l.swept++
			l.clearDeadline(c)
			owner := c.owner
			l.expired(c)
			if c.cc != nil {
				l.serve(c)
			} else if owner != nil {
				l.serve(owner)
			}
		}
	}
	// Acting on one may have set another's: the nearest of all is known
	// once all have been.
	for k := range l.timers {
		if c := l.timers[k].head; c != nil && (l.sweepAt.IsZero() || c.deadline.Before(l.sweepAt)) {
			l.sweepAt = c.deadline
		}
	}
}

// timeout is the error of a loop's deadline passed, as a net.Conn's.
func timeout(op string) error {
	return &net.OpError{Op: op, Net: "tcp", Err: os.ErrDeadlineExceeded}
}

func (l *loop) expired(c *fdConn) {
	switch c.phase {
	case cIdle:
		if !c.parkAt.IsZero() && l.now.Before(c.idleEnd) {
			c.parkAt = time.Time{}
			if !l.park(c) {
				c.canPark = false
				l.setDeadline(c, c.idleEnd, tIdle)
			}
			return
		}
		l.closeClient(c) // idle timeout
	case cFlush, cClosing:
		l.closeClient(c) // write timeout
	case uConnect:
		l.attemptFailed(c.owner, c, &errDial{timeout("dial")})
	case uWrite:
		l.attemptFailed(c.owner, c, timeout("write"))
	case uAwait:
		l.attemptFailed(c.owner, c, timeout("read"))
	case uBody:
		x := c.owner.x
		l.handBoth(c.owner, c, func(up *upConn) bool { return x.relay(up) })
	}
}

// interest registers the events c waits for: input unless it has ended,
// or a client's buffer is full or it is closing; output while some is
// pending or a connect is under way.
func (l *loop) interest(c *fdConn) {
	if c.closed {
		return
	}
	var want uint32
	if cc := c.cc; cc != nil {
		full := cc.connState != nil && cc.br.Buffered() == cc.br.Size()
		if !c.eof && !full && c.phase != cClosing {
			want |= unix.EPOLLIN
		}
	} else if c.phase != uConnect && c.phase != uWrite {
		want = unix.EPOLLIN // not while the request goes out: an early answer waits
	} else if c.phase == uConnect {
		want = unix.EPOLLOUT
	}
	if len(c.pending) > 0 {
		want |= unix.EPOLLOUT
	}
	if want != c.events {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, l.epollEvent(c, want))
		c.events = want
	}
}

func (l *loop) clientEvent(c *fdConn, ev uint32) {
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		l.closeClient(c) // reset: nothing can reach the client
		return
	}
	if ev&unix.EPOLLOUT != 0 && len(c.pending) > 0 {
		wrote, err := c.flush()
		switch {
		case err != nil:
			l.closeClient(c)
			return
		case len(c.pending) > 0:
			if wrote > 0 { // no progress for WriteTimeout: a wake-up that wrote nothing moves nothing
				l.setDeadline(c, l.now.Add(l.s.o.Limits.WriteTimeout), tWrite)
			}
		case c.phase == cClosing:
			l.closeClient(c)
			return
		case c.phase == cFlush:
			l.next(c)
		}
		l.interest(c)
	}
	if ev&unix.EPOLLIN == 0 || c.closed {
		return
	}
	switch c.phase {
	case cIdle:
		l.readRequest(c)
	default:
		l.readAhead(c)
	}
}

// fill reads once into br; false: the stream has ended (or failed).
func fill(br *bufio.Reader) bool {
	if br.Buffered() == br.Size() {
		return true
	}
	_, err := br.Peek(br.Buffered() + 1)
	return err == nil || err == errAgain || err == bufio.ErrBufferFull
}

// readAhead reads what a client sends while its request is served (a
// pipelined one), into its buffer while there is room.
func (l *loop) readAhead(c *fdConn) {
	if c.cc.connState != nil && !fill(c.cc.br) {
		c.eof = true
	}
	l.interest(c)
}

func (l *loop) readRequest(c *fdConn) {
	cc := c.cc
	if cc.connState == nil {
		l.s.takeBuffers(cc)
	}
	if !fill(cc.br) {
		c.eof = true
	}
	if cc.br.Buffered() == 0 {
		if c.eof {
			l.closeClient(c)
			return
		}
		l.s.giveBuffers(cc) // woken for nothing
		return
	}
	l.begin(c)
}

// begin starts the request whose bytes are buffered.
func (l *loop) begin(c *fdConn) {
	cc := c.cc
	l.s.arrived(cc, c.idleEnd, l.now)
	cc.idle.Store(false)
	c.phase, c.headStart, c.parkAt = cHead, l.now, time.Time{}
	l.clearDeadline(c)
}

// serve runs the requests c has buffered, one after another.
func (l *loop) serve(c *fdConn) {
	for !c.closed && c.phase == cHead {
		l.request(c)
	}
}

// request serves the head buffered on c: in the loop when it is whole and
// simple, else handed off.
func (l *loop) request(c *fdConn) {
	s, cc := l.s, c.cc
	lim := s.o.Limits
	buf, _ := cc.br.Peek(cc.br.Buffered())
	if !headReady(buf, true) && !c.eof {
		// The rest of a head the goroutine path reads as it comes, and
		// refuses as soon as a line is wrong.
		at := c.headStart
		l.handOff(c, handHead, func() bool { return s.serveRequestFrom(cc, at) })
		return
	}
	r, logged := s.startRequest(cc, c.headStart)
	err := readHead(cc.br, &cc.req, lim.MaxHeaderBytes, lim.MaxHeaders, true)
	if err != nil {
		l.answered(c, s.headRead(cc, r, logged, err))
		return
	}
	if why, ok := simple(cc); !ok {
		c.r, c.logged = r, logged // for handOffFailed
		l.handOff(c, why, func() bool { return s.headRead(cc, r, logged, nil) })
		return
	}
	x, keep := s.prepare(cc)
	if x == nil {
		s.endRequest(cc, r, logged)
		l.answered(c, keep)
		return
	}
	c.phase, c.x, c.r, c.logged = cExchange, x, r, logged
	l.exchange(c)
}

// headReady reports whether readHead can read the head buf begins without
// reading more: buf holds its end, or a line readHead refuses.
func headReady(buf []byte, request bool) bool {
	// The common case without a walk: a request without a body, all read,
	// ends the buffer. An empty line after the first, reached line by
	// line, ends the head or is refused (unless empty lines come first,
	// which a request may skip). (Searching the whole buffer for one,
	// which responses would need, costs more than the walk: every line
	// has a CR.)
	if len(buf) > 0 && buf[0] != '\r' && bytes.HasSuffix(buf, crlfcrlf) {
		return true
	}
	return headReadyLines(buf, request)
}

var crlfcrlf = []byte("\r\n\r\n")

// headReadyLines is headReady line by line.
func headReadyLines(buf []byte, request bool) bool {
	skipped, first := 0, true
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			return false
		}
		line := buf[:i+1]
		buf = buf[i+1:]
		switch {
		case len(line) < 2 || line[len(line)-2] != '\r':
			return true
		case len(line) > 2:
			first = false
		case first && request && skipped < 8: // empty lines before a request line
			skipped += 2
		default:
			return true
		}
	}
}

// simple reports whether the loop serves the request read into cc.req
// itself: no upgrade, no Expect, and a body (if any) small and all read;
// else why not. A framing prepare refuses is simple: the refusal is.
func simple(cc *clientConn) (handReason, bool) {
	h := &cc.req
	switch {
	case h.conn.upgrade:
		return handUpgrade, false
	case h.count[expectField] > 0:
		return handBody, false
	}
	f, err := h.requestFraming()
	if err == nil && (f.chunked || f.length > maxInline || f.length > int64(cc.br.Buffered())) {
		return handBody, false
	}
	return 0, true
}

// answered goes on after a response of the request on c (keep: the
// connection stays open) once what is pending has gone out.
func (l *loop) answered(c *fdConn, keep bool) {
	c.x = nil
	if len(c.pending) > 0 {
		c.phase = cFlush
		if !keep {
			c.phase = cClosing
		}
		l.setDeadline(c, l.now.Add(l.s.o.Limits.WriteTimeout), tWrite)
		l.interest(c)
		return
	}
	if !keep {
		l.closeClient(c)
		return
	}
	l.next(c)
}

func (l *loop) next(c *fdConn) {
	c.cc.served = true
	c.idleEnd = l.now.Add(l.s.o.Limits.IdleTimeout)
	l.await(c)
}

// await is the goroutine path's await for a loop: the next request when it
// is buffered; else the buffers go back and the connection waits until
// idleEnd, parked (netpark) at once or after linger as there.
func (l *loop) await(c *fdConn) {
	s, cc := l.s, c.cc
	c.phase = cIdle
	l.clearDeadline(c)
	cc.idle.Store(true)
	if s.isClosing() {
		l.closeClient(c)
		return
	}
	if cc.connState != nil && cc.br.Buffered() > 0 {
		l.begin(c)
		return
	}
	if c.eof {
		l.closeClient(c)
		return
	}
	if cc.connState != nil {
		s.giveBuffers(cc)
	}
	parking := s.park != nil && c.canPark && !cc.woken
	if parking && cc.parkAtOnce() {
		if l.park(c) {
			return
		}
		c.canPark, parking = false, false
	}
	c.parkAt = time.Time{}
	if parking {
		c.parkAt = c.idleEnd.Add(s.linger - s.o.Limits.IdleTimeout) // linger from when it went idle
		l.setDeadline(c, c.parkAt, tLinger)
	} else {
		l.setDeadline(c, c.idleEnd, tIdle)
	}
	l.interest(c)
}

// park hands an idle client to the parker, as await does in a goroutine;
// false: it stays.
func (l *loop) park(c *fdConn) bool {
	s, cc := l.s, c.cc
	idleEnd := c.idleEnd
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	dc := cc.dc
	s.setConn(cc, detachedConn{})
	cc.dc = nil
	err := s.park.ParkFD(c.fd, idleEnd, func(nc net.Conn) { s.woken(cc, nc, idleEnd) }, func() { s.closeConn(cc) })
	if err != nil {
		s.setConn(cc, c)
		cc.dc = dc
		if unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.fd, l.epollEvent(c, c.events)) != nil {
			l.closeClient(c)
		}
		return false
	}
	// The parker owns the socket now, and may wake it at once: nothing of
	// cc is touched here from now on.
	l.forget(c)
	c.closed = true
	c.closing.Store(true)
	c.fd = -1
	return true
}

// exchange sends the request of c to its owner: on a connection of the
// loop's pool, or a new one.
func (l *loop) exchange(c *fdConn) {
	s, x := l.s, c.x
	e := x.d.Owner.HTTP.Endpoint
	k := poolKey{e: e, loop: l.idx}
	if up := s.pool.popAlive(k, s.now(c.cc), false); up != nil { // no probe: see run
		u := up.c.(*fdConn)
		u.reused = true
		l.bind(c, u)
		l.sendRequest(c)
		return
	}
	ip, err := netip.ParseAddr(e.Host)
	if e.Transport != "http" || err != nil || ip.Zone() != "" {
		l.handExchange(c, handInstance, x.run)
		return
	}
	l.dial(c, ip.Unmap(), e.Port, k)
}

func (l *loop) bind(c, u *fdConn) {
	c.up, u.owner = u, c
}

// handExchange hands c to a goroutine that does the rest of its exchange
// (body) and writes its access log line.
func (l *loop) handExchange(c *fdConn, why handReason, body func() bool) {
	s, cc, r, logged := l.s, c.cc, c.r, c.logged
	c.x = nil
	l.handOff(c, why, func() bool {
		keep := body()
		s.endRequest(cc, r, logged)
		return keep
	})
}

// handOff gives client c to a goroutine, as a net.Conn with what it has
// buffered, to run rest (false: close) and carry on as the goroutine path
// does. Nothing of the request has gone to an instance on c's behalf that
// rest does not know of, and nothing is pending to the client.
func (l *loop) handOff(c *fdConn, why handReason, rest func() bool) {
	l.ls.handed[why].Add(1)
	s, cc := l.s, c.cc
	nc, err := l.release(c)
	if err != nil {
		l.handOffFailed(c, why, err)
		return
	}
	c.handed = nc
	written := cc.dc.written
	s.setConn(cc, nc)
	cc.dc = newDeadlineConn(nc)
	cc.dc.written = written
	cc.dc.writeProgress(time.Time{}, s.o.Limits.WriteTimeout)
	if cc.connState == nil {
		s.takeBuffers(cc)
	} else {
		rebind(&cc.rwBuffers, cc.dc)
	}
	go func() { s.carryOn(cc, rest()) }()
}

// handOffFailed ends the request of client c, whose hand-off for why
// failed with err (net.FileConn: EMFILE, say), as a failed request: logged,
// counted, its access log line written, the connection closed (its socket
// already is: nothing can answer).
func (l *loop) handOffFailed(c *fdConn, why handReason, err error) {
	s, cc := l.s, c.cc
	s.log.Warn("http: a connection could not leave its event loop", zap.Error(err))
	r, logged := c.r, c.logged
	method, instance := metrics.Method(cc.req.method), ""
	switch why {
	case handHead: // no head read: the request starts here
		r, logged = s.startRequest(cc, c.headStart)
		method = "other"
	case handInstance, handFailed, handResponse: // routed
		instance = cc.ss.d.Owner.Name
	}
	s.o.Metrics.Request("http", method, instance, "failed")
	s.o.Metrics.Error("http", "hand_off")
	cc.status, cc.outcome = 0, "hand_off"
	s.endRequest(cc, r, logged)
	s.closeConn(cc)
}

// release takes c out of the loop as a net.Conn of Go's.
func (l *loop) release(c *fdConn) (net.Conn, error) {
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	l.forget(c)
	if c.up != nil && c.cc != nil {
		l.closeUp(c.up)
	}
	f := os.NewFile(uintptr(c.fd), "")
	nc, err := net.FileConn(f) // a duplicate
	f.Close()
	c.closed = true
	c.closing.Store(true)
	c.fd = -1
	return nc, err
}

// rebind moves buffers onto rw, keeping what their reader holds (their
// writer holds nothing).
func rebind(b *rwBuffers, rw io.ReadWriter) {
	held, _ := b.br.Peek(b.br.Buffered())
	pre := append([]byte(nil), held...)
	b.br.Reset(&prefixReader{pre: pre, r: rw})
	if len(pre) > 0 {
		_, _ = b.br.Peek(len(pre)) // back in the buffer now, where Buffered sees it
	}
	b.bw.Reset(rw)
}

// prefixReader reads pre, then r.
type prefixReader struct {
	pre []byte
	r   io.Reader
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// dial opens a connection to ip:port without waiting for it.
func (l *loop) dial(c *fdConn, ip netip.Addr, port int, k poolKey) {
	addr := net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port)))
	failed := func(call string, err error) {
		l.attemptFailed(c, nil, &errDial{&net.OpError{Op: "dial", Net: "tcp", Addr: addr, Err: os.NewSyscallError(call, err)}})
	}
	var sa unix.Sockaddr
	family := unix.AF_INET6
	if ip.Is4() {
		sa, family = &unix.SockaddrInet4{Port: port, Addr: ip.As4()}, unix.AF_INET
	} else {
		sa = &unix.SockaddrInet6{Port: port, Addr: ip.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		failed("socket", err)
		return
	}
	// As Go's dialer sets them.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15)
	err = unix.Connect(fd, sa)
	if err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		failed("connect", err)
		return
	}
	u := &fdConn{l: l, fd: fd, key: k, remote: addr}
	u.id = l.newID()
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, l.epollEvent(u, unix.EPOLLIN|unix.EPOLLOUT)); err != nil {
		unix.Close(fd)
		failed("epoll_ctl", err)
		return
	}
	u.events = unix.EPOLLIN | unix.EPOLLOUT
	l.conns[u.id] = u
	l.bind(c, u)
	u.phase = uConnect
	l.setDeadline(u, l.now.Add(l.s.o.Limits.DialTimeout), tDial)
}

// connected starts the request on a new connection.
func (l *loop) connected(u *fdConn) {
	if sa, err := unix.Getsockname(u.fd); err == nil {
		u.local = sockaddrTCP(sa)
	}
	u.upc = newUpConn(u, u.key)
	l.s.pool.takeBuffers(u.upc)
	u.phase = uWrite
	l.clearDeadline(u)
	l.interest(u)
	l.sendRequest(u.owner)
}

func sockaddrTCP(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}
	}
	return nil
}

// sendRequest writes the request of c, all in cc.out (simple: its body is
// small and read), as exchangeHead does.
func (l *loop) sendRequest(c *fdConn) {
	x, u := c.x, c.up
	sent := x.at
	if sent.IsZero() {
		sent = l.now
	}
	x.at = time.Time{} // a retry reads the clock
	x.appendRequest(true)
	if x.bodyRead {
		sent = l.now
	}
	u.sent, u.phase = sent, uWrite
	if _, err := u.Write(c.cc.out); err != nil {
		l.attemptFailed(c, u, x.writeFailed(err))
		return
	}
	if len(u.pending) > 0 {
		l.setDeadline(u, l.now.Add(l.s.o.Limits.WriteTimeout), tWrite)
		return
	}
	l.awaitResponse(u)
}

func (l *loop) awaitResponse(u *fdConn) {
	u.phase = uAwait
	l.setDeadline(u, u.sent.Add(l.s.o.Limits.ResponseTimeout), tResponse)
	l.interest(u)
}

// attemptFailed hands the exchange of c, whose attempt on u (nil: none
// opened) failed with err before any byte of a response, to a goroutine:
// retry does what send and finish would have.
func (l *loop) attemptFailed(c, u *fdConn, err error) {
	x := c.x
	reused := u != nil && u.reused
	if u != nil {
		l.closeUp(u)
	}
	k := poolKey{e: x.d.Owner.HTTP.Endpoint, loop: l.idx}
	l.handExchange(c, handFailed, func() bool { return x.retry(err, reused, k) })
}

func (l *loop) upEvent(u *fdConn, ev uint32) {
	c := u.owner
	switch u.phase {
	case uIdle:
		// Closed by the instance, or bytes no request asked for.
		l.s.pool.remove(u.upc)
		l.closeUp(u)
	case uConnect:
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		soErr, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soErr != 0 {
			err = syscall.Errno(soErr)
		}
		if err != nil {
			l.attemptFailed(c, u, &errDial{&net.OpError{Op: "dial", Net: "tcp", Addr: u.remote, Err: os.NewSyscallError("connect", err)}})
			return
		}
		l.connected(u)
	case uWrite:
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		wrote, err := u.flush()
		switch {
		case err != nil:
			l.attemptFailed(c, u, c.x.writeFailed(err))
		case len(u.pending) == 0:
			l.awaitResponse(u)
		case wrote > 0:
			l.setDeadline(u, l.now.Add(l.s.o.Limits.WriteTimeout), tWrite)
		}
	case uAwait, uBody:
		l.readResponse(u)
	}
}

// readResponse reads the response on u: the loop relays it when its head
// is whole and final and its body has a Content-Length and fits u's
// buffer; any other is relayed by a goroutine.
func (l *loop) readResponse(u *fdConn) {
	c := u.owner
	x := c.x
	br := u.upc.br
	had := br.Buffered()
	ended := !fill(br)
	came := br.Buffered() > had
	if u.phase == uAwait {
		buf, _ := br.Peek(br.Buffered())
		if len(buf) == 0 && !ended {
			return
		}
		if ended || !headReady(buf, false) || len(buf) < 10 || buf[9] == '1' {
			// Cut short, in parts, interim or 101: as exchangeHead reads it.
			sent, reused, k := u.sent, u.reused, poolKey{e: x.d.Owner.HTTP.Endpoint, loop: l.idx}
			l.handBoth(c, u, func(up *upConn) bool {
				if err := x.awaitResponse(up, sent); err != nil {
					up.c.Close()
					return x.retry(err, reused, k)
				}
				return x.relay(up)
			})
			return
		}
		if err := readHead(br, &c.cc.res, 64<<10, 200, false); err != nil {
			l.attemptFailed(c, u, err)
			return
		}
		x.responseCame(u.upc, l.now)
		u.phase = uBody
		u.rf, u.rfErr = c.cc.res.responseFraming(x.h.method)
	}
	rf := u.rf
	switch {
	case u.rfErr != nil || !rf.chunked && rf.length >= 0 && int64(br.Buffered()) >= rf.length:
		l.relay(c, u)
	case rf.chunked || rf.length < 0 || ended || br.Buffered() == br.Size():
		l.handBoth(c, u, func(up *upConn) bool { return x.relay(up) })
	case came: // no progress for ResponseTimeout: a wake-up that read nothing moves nothing
		l.setDeadline(u, l.now.Add(l.s.o.Limits.ResponseTimeout), tResponse)
	}
}

// relay relays a response all read, in the loop.
func (l *loop) relay(c, u *fdConn) {
	u.phase, u.reused = uIdle, false
	l.clearDeadline(u)
	c.up, u.owner = nil, nil
	l.relays.Add(1)
	keep := c.x.relay(u.upc) // u back in the pool, or closed
	l.s.endRequest(c.cc, c.r, c.logged)
	l.answered(c, keep)
}

// handBoth hands c and its instance connection u to a goroutine, which
// runs rest on u as a connection of Go's (the goroutines' pool's once
// done), with what u has buffered.
func (l *loop) handBoth(c, u *fdConn, rest func(up *upConn) bool) {
	x := c.x
	old := u.upc
	u.upc, c.up, u.owner = nil, nil, nil
	nc, err := l.release(u)
	if err != nil {
		l.s.pool.giveBuffers(old)
		l.handExchange(c, handFailed, func() bool { return x.finish(nil, err) })
		return
	}
	up := newUpConn(nc, poolKey{e: u.key.e})
	// The body goes on under the same no-progress bound as in the loop.
	up.dc.readProgress(time.Time{}, l.s.o.Limits.ResponseTimeout)
	up.rwBuffers = old.rwBuffers
	rebind(up.rwBuffers, up.dc)
	l.handExchange(c, handResponse, func() bool { return rest(up) })
}

// Read reads what the socket holds; errAgain when nothing.
func (c *fdConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, e := rawtcp.Read(uintptr(c.fd), b)
		switch e {
		case 0:
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if c.cc == nil {
				c.l.emptyReads++
			}
			return 0, errAgain
		}
		return 0, c.opError("read", e)
	}
}

// Write writes b, keeping what the socket does not take for the loop to
// send when it can.
func (c *fdConn) Write(b []byte) (int, error) {
	if c.werr != nil {
		return 0, c.werr
	}
	n := len(b)
	if len(c.pending) == 0 {
		m, err := c.write(b)
		if err != nil {
			return 0, err
		}
		if b = b[m:]; len(b) == 0 {
			return n, nil
		}
	}
	c.pending = append(c.pending, b...)
	c.l.interest(c)
	return n, nil
}

// write is one write; 0 when the socket takes nothing now.
func (c *fdConn) write(b []byte) (int, error) {
	for {
		m, e := rawtcp.Write(uintptr(c.fd), b)
		switch e {
		case 0:
			return m, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, nil
		}
		c.werr = c.opError("write", e)
		return 0, c.werr
	}
}

// flush writes what is pending, wrote bytes of it (0: the socket took
// nothing, no progress).
func (c *fdConn) flush() (wrote int, err error) {
	m, err := c.write(c.pending)
	if err != nil {
		return 0, err
	}
	if c.pending = c.pending[m:]; len(c.pending) == 0 {
		c.pending = nil
	}
	return m, nil
}

func (c *fdConn) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: os.NewSyscallError(op, e)}
}

// Close has the loop close the connection.
func (c *fdConn) Close() error {
	if c.closing.Swap(true) {
		return nil
	}
	c.l.enqueue(loopOp{c: c, close: true})
	return nil
}

func (c *fdConn) LocalAddr() net.Addr  { return c.local }
func (c *fdConn) RemoteAddr() net.Addr { return c.remote }

// The loop keeps a connection's timeouts on its own clock (setDeadline):
// an untimedConn.
func (c *fdConn) untimed()                         {}
func (c *fdConn) SetDeadline(time.Time) error      { return nil }
func (c *fdConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fdConn) SetWriteDeadline(time.Time) error { return nil }
