package sip

import (
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On Linux a reader calls recvmmsg and sendmmsg itself, with MSG_DONTWAIT,
// as raw system calls inside the socket's RawConn (which parks the reader
// on the netpoller when there is nothing to read). A raw call does not go
// through the scheduler's entersyscall: a call that cannot block needs
// none, and entersyscall wakes the runtime's sysmon thread whenever the
// process has been idle, which at a datagram or two per wake-up cost a
// sixth of clb's CPU (perf, bench/sip-vs-kamailio.sh at 2,000 calls/s).
// The headers and peer addresses are built in place in arrays kept per
// batch, not converted from net.UDPAddr values per datagram.

// sysSocket is what the raw calls need of a socket.
type sysSocket struct{ raw syscall.RawConn }

func newSysSocket(c *net.UDPConn) (sysSocket, error) {
	raw, err := c.SyscallConn()
	return sysSocket{raw}, err
}

// sysBatch is the kernel's view of a batch: a header, an iovec and a
// socket address per datagram, pointing at one another once and for all.
type sysBatch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // room for either family
	call  *mmsgCall
}

// mmsgCall is one system call over a batch, as the function RawConn runs:
// made once, so that a call allocates no closure.
type mmsgCall struct {
	trap  uintptr
	hdrs  []unix.Mmsghdr
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // run, bound
}

// run makes the call; false (the socket not ready) parks the caller on the
// netpoller until it is.
func (c *mmsgCall) run(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall6(c.trap, fd, uintptr(unsafe.Pointer(&c.hdrs[0])), uintptr(len(c.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.n, c.errno = int(r), e
		return true
	}
}

func newSysBatch(n int) sysBatch {
	s := sysBatch{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet6, n), call: new(mmsgCall)}
	s.call.fn = s.call.run
	for i := range s.hdrs {
		h := &s.hdrs[i].Hdr
		h.Iov = &s.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&s.names[i]))
	}
	return s
}

// readBatch reads up to len(d.bufs) datagrams, waiting for the first:
// d.n[i] bytes of each into d.bufs[i], its sender in d.peers[i].
func (s *udpSocket) readBatch(d *datagrams) (int, error) {
	sb := &d.sys
	for i, b := range d.bufs {
		sb.iovs[i].Base = &b[0]
		sb.iovs[i].SetLen(len(b))
		sb.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		sb.hdrs[i].Hdr.Flags = 0
	}
	n, err := s.mmsg(true, sb.call, sb.hdrs[:len(d.bufs)])
	for i := range n {
		d.n[i] = int(sb.hdrs[i].Len)
		d.peers[i] = sockaddrAddrPort(&sb.names[i])
	}
	return n, err
}

// writeBatch sends d.bufs[from:to] to d.peers[from:to]; it returns how many
// were sent, stopping at the first that could not be (with its error).
func (s *udpSocket) writeBatch(d *datagrams, from, to int) (int, error) {
	sb := &d.sys
	for i := from; i < to; i++ {
		b := d.bufs[i]
		sb.iovs[i].Base = nil
		if len(b) > 0 {
			sb.iovs[i].Base = &b[0]
		}
		sb.iovs[i].SetLen(len(b))
		sb.hdrs[i].Hdr.Namelen = putSockaddr(&sb.names[i], d.peers[i])
		sb.hdrs[i].Hdr.Flags = 0
	}
	return s.mmsg(false, sb.call, sb.hdrs[from:to])
}

// mmsg is one recvmmsg (read) or sendmmsg over hdrs, waiting on the
// netpoller until the socket is ready.
func (s *udpSocket) mmsg(read bool, c *mmsgCall, hdrs []unix.Mmsghdr) (int, error) {
	if len(hdrs) == 0 {
		return 0, nil
	}
	c.trap, c.hdrs, c.n, c.errno = unix.SYS_SENDMMSG, hdrs, 0, 0
	wait := s.sys.raw.Write
	if read {
		c.trap, wait = unix.SYS_RECVMMSG, s.sys.raw.Read
	}
	err := wait(c.fn)
	c.hdrs = nil
	if err != nil {
		return 0, err // the socket is closed
	}
	if c.errno != 0 {
		return 0, c.errno
	}
	return c.n, nil
}

// sockaddrAddrPort is the address the kernel wrote in sa, IPv4 or IPv6
// (IPv4-mapped addresses as IPv4; a scope as a numeric zone).
func sockaddrAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p := uint16(port[0])<<8 | uint16(port[1])
	if sa.Family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), p)
	}
	ip := netip.AddrFrom16(sa.Addr).Unmap()
	if sa.Scope_id != 0 && ip.Is6() {
		ip = ip.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
	}
	return netip.AddrPortFrom(ip, p)
}

// putSockaddr writes a in sa in a's family (the batch's socket is of that
// family: sendBatch.queue sees to it) and returns its length.
func putSockaddr(sa *unix.RawSockaddrInet6, a netip.AddrPort) uint32 {
	port := (*[2]byte)(unsafe.Pointer(&sa.Port))
	if a.Addr().Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr().As4()}
		port[0], port[1] = byte(a.Port()>>8), byte(a.Port())
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.Addr().As16()}
	port[0], port[1] = byte(a.Port()>>8), byte(a.Port())
	return unix.SizeofSockaddrInet6
}
