package netpark

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Parker holds parked connections in one epoll set; the zero value is not
// usable, and a nil *Parker parks nothing (Park fails with ErrUnsupported).
type Parker struct {
	epfd, efd int // the epoll set, and the eventfd that wakes Run
	tick      time.Duration
	// ctl is held (shared) to poke efd and (exclusive) to close it and
	// epfd.
	ctl sync.RWMutex

	mu      sync.Mutex
	entries map[uint64]*entry // by id, the epoll event's data
	buckets map[int64]*entry  // deadline tick -> list of entries
	nextID  uint64            // 0 is the eventfd's
	closed  bool
}

// entry is one parked connection.
type entry struct {
	id           uint64
	rc           syscall.RawConn // nil when detached
	fd           int             // detached: the descriptor the Parker owns
	wake, expire func()
	wakeConn     func(net.Conn) // detached
	tick         int64          // its bucket, 0 for none
	prev, next   *entry
}

// Supported reports whether connections can be parked here (Linux: yes,
// though New can still fail, out of file descriptors).
func Supported() bool { return true }

// New opens the epoll set; Run must then run until Close.
func New(o Options) (*Parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // data 0: the eventfd
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(efd)
		unix.Close(epfd)
		return nil, err
	}
	return &Parker{
		epfd: epfd, efd: efd, tick: o.tick(),
		entries: map[uint64]*entry{}, buckets: map[int64]*entry{}, nextID: 1,
	}, nil
}

// Park hands c over until it is readable (wake) or deadline passes (expire;
// a zero deadline never passes). An error leaves c with the caller, and
// neither function is called.
func (p *Parker) Park(c net.Conn, deadline time.Time, wake, expire func()) error {
	if p == nil {
		return ErrUnsupported
	}
	rc, err := rawConnOf(c)
	if err != nil {
		return err
	}
	e := &entry{rc: rc, fd: -1, wake: wake, expire: expire}
	return p.register(e, deadline)
}

// ParkDetached parks c outside Go's poller: the socket is kept as a
// descriptor of the Parker's own and c is closed, which frees Go's
// descriptor and poller entry for it (about 900 bytes a connection, much
// of it memory the runtime never returns), so that a parked connection
// costs only its socket. wake gets a new net.Conn on the same socket. c
// must be a connection with a descriptor of its own (a *net.TCPConn, not
// a *tls.Conn, whose state cannot move) and nothing buffered in its user.
// An error leaves c open with the caller; once c is closed, a failure to
// park it or to make its new conn is an expire.
func (p *Parker) ParkDetached(c net.Conn, deadline time.Time, wake func(net.Conn), expire func()) error {
	if p == nil {
		return ErrUnsupported
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return ErrUnsupported
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	fd, dupErr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return err
	}
	if dupErr != nil {
		return dupErr
	}
	c.Close()
	if err := p.ParkFD(fd, deadline, wake, expire); err != nil {
		unix.Close(fd)
		expire()
	}
	return nil
}

// ParkFD is ParkDetached for a socket the caller holds as a bare
// descriptor (the HTTP event loops' connections): the Parker owns fd from
// now on. An error leaves fd with the caller, and neither function is
// called.
func (p *Parker) ParkFD(fd int, deadline time.Time, wake func(net.Conn), expire func()) error {
	if p == nil {
		return ErrUnsupported
	}
	return p.register(&entry{fd: fd, expire: expire, wakeConn: wake}, deadline)
}

// register puts e's socket in the epoll set and e in the table, both
// under p.mu: Run, which takes p.mu to find an event's entry, finds it
// even when the event comes at once, and cannot expire it (and, detached,
// close its descriptor) before it is in the set.
func (p *Parker) register(e *entry, deadline time.Time) error {
	if !deadline.IsZero() {
		e.tick = p.tickOf(deadline)
	}
	p.mu.Lock()
	if p.closed { // Run has not closed epfd yet: it waits for p.mu
		p.mu.Unlock()
		return ErrClosed
	}
	e.id = p.nextID
	var ctlErr error
	add := func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(e.id)), Pad: int32(uint32(e.id >> 32))}
		ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	}
	var err error
	if e.rc != nil {
		err = e.rc.Control(add)
	} else {
		add(uintptr(e.fd))
	}
	if err == nil {
		err = ctlErr
	}
	if err != nil {
		p.mu.Unlock()
		return err
	}
	p.nextID++
	p.entries[e.id] = e
	p.link(e)
	first := len(p.entries) == 1
	p.mu.Unlock()
	if first {
		p.poke() // Run may be waiting without a timeout
	}
	return nil
}

// Len is the number of parked connections.
func (p *Parker) Len() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries)
}

// Close stops Run, which expires every connection still parked; Park fails
// from now on. It does not wait for Run.
func (p *Parker) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.poke()
}

func (p *Parker) poke() {
	one := [8]byte{1}
	p.ctl.RLock()
	if p.epfd >= 0 {
		_, _ = unix.Write(p.efd, one[:])
	}
	p.ctl.RUnlock()
}

// Run waits for parked connections to become readable or expire until
// Close, then expires the rest and releases the epoll set.
func (p *Parker) Run() {
	if p == nil {
		return
	}
	defer func() {
		p.mu.Lock()
		rest := make([]*entry, 0, len(p.entries))
		for _, e := range p.entries {
			p.unlink(e)
			rest = append(rest, e)
		}
		p.mu.Unlock()
		for _, e := range rest {
			p.release(e)
			p.expire(e)
		}
		p.ctl.Lock()
		unix.Close(p.efd)
		unix.Close(p.epfd)
		p.epfd = -1
		p.ctl.Unlock()
	}()
	events := make([]unix.EpollEvent, 256)
	var woken, expired []*entry
	for {
		p.mu.Lock()
		closed, waiting := p.closed, len(p.entries) > 0
		p.mu.Unlock()
		if closed {
			return
		}
		msec := -1
		if waiting {
			msec = int(max(p.tick/time.Millisecond, 1))
		}
		n, err := unix.EpollWait(p.epfd, events, msec)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return // the set is broken: expire everything rather than hold it
		}
		woken, expired = woken[:0], expired[:0]
		now := time.Now().UnixNano() / int64(p.tick) // buckets at or before it have passed
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				var b [8]byte
				_, _ = unix.Read(p.efd, b[:])
				continue
			}
			if e := p.entries[id]; e != nil {
				p.unlink(e)
				woken = append(woken, e)
			}
		}
		for t, e := range p.buckets {
			if t > now {
				continue
			}
			for e != nil {
				next := e.next
				p.unlink(e)
				expired = append(expired, e)
				e = next
			}
		}
		p.mu.Unlock()
		for _, e := range woken {
			p.release(e)
			p.wake(e)
		}
		for _, e := range expired {
			p.release(e)
			p.expire(e)
		}
		clear(woken)
		clear(expired)
	}
}

// release takes e's socket out of the set (a one-shot event leaves it in,
// disabled), so that it can be parked again. A socket already closed has
// left the set with its last descriptor.
// (Only Run calls it, before it closes epfd.)
func (p *Parker) release(e *entry) {
	del := func(fd uintptr) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) }
	if e.rc != nil {
		_ = e.rc.Control(del)
	} else {
		del(uintptr(e.fd))
	}
}

// wake hands a readable connection back; a detached one gets a net.Conn
// again (Go's descriptor is a duplicate: the Parker's is closed).
func (p *Parker) wake(e *entry) {
	if e.wakeConn == nil {
		e.wake()
		return
	}
	f := os.NewFile(uintptr(e.fd), "")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		e.expire()
		return
	}
	e.wakeConn(c)
}

func (p *Parker) expire(e *entry) {
	if e.wakeConn != nil {
		unix.Close(e.fd)
	}
	e.expire()
}

// tickOf is the bucket of deadline t: the first tick boundary at or after it.
func (p *Parker) tickOf(t time.Time) int64 {
	ns := t.UnixNano()
	d := int64(p.tick)
	return (ns + d - 1) / d
}

// link adds e to the table's bucket of its deadline; p.mu is held.
func (p *Parker) link(e *entry) {
	if e.tick == 0 {
		return
	}
	head := p.buckets[e.tick]
	e.prev, e.next = nil, head
	if head != nil {
		head.prev = e
	}
	p.buckets[e.tick] = e
}

// unlink removes e from the table and its bucket; p.mu is held.
func (p *Parker) unlink(e *entry) {
	delete(p.entries, e.id)
	if e.tick == 0 {
		return
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else if e.next != nil {
		p.buckets[e.tick] = e.next
	} else {
		delete(p.buckets, e.tick)
	}
	if e.next != nil {
		e.next.prev = e.prev
	}
	e.prev, e.next = nil, nil
}
