package rawtcp

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// conn is a TCP connection whose reads and writes are raw socket
// system calls inside its RawConn. Deadlines, closing and parking are the
// TCPConn's: the RawConn waits on the same poller.
type conn struct {
	*net.TCPConn
	raw         syscall.RawConn
	rd, wr, try *rawIO
}

// rawIO is one direction's system call, as the function RawConn runs:
// made once per connection, so that a read or write allocates no closure.
type rawIO struct {
	trap  uintptr
	buf   []byte
	n     int // done so far
	errno syscall.Errno
	once  bool                  // no waiting: what the socket takes now (TryWrite)
	fn    func(fd uintptr) bool // run, bound
}

// run reads once, or writes until buf is all written; false (the socket
// not ready) has the caller wait on the poller and call it again.
func (o *rawIO) run(fd uintptr) bool {
	for {
		rest := o.buf[o.n:]
		r, e := call(o.trap, fd, rest)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return o.once
		case 0:
			o.n += r
			if o.trap == syscall.SYS_WRITE && o.n < len(o.buf) {
				continue
			}
		}
		o.errno = e
		return true
	}
}

// Read is one raw read of fd, for a caller inside a RawConn's Read of its
// own (a probe of an idle socket, say).
func Read(fd uintptr, b []byte) (int, syscall.Errno) {
	if len(b) == 0 {
		return 0, 0 // a raw call needs &b[0]
	}
	return call(syscall.SYS_READ, fd, b)
}

// Write is one raw write of fd (what the socket takes, maybe less than
// b), for a caller that owns the descriptor outside Go's poller (the HTTP
// event loops).
func Write(fd uintptr, b []byte) (int, syscall.Errno) {
	if len(b) == 0 {
		return 0, 0
	}
	return call(syscall.SYS_WRITE, fd, b)
}

// call is the system call trap on fd with b. Under the race detector it is
// syscall's, whose annotations tell the detector that what one goroutine
// wrote to a socket happens before another's read of it; a raw call has
// none, and goroutines that synchronise only through sockets (a test and
// the server it talks to) would look racy.
func call(trap, fd uintptr, b []byte) (int, syscall.Errno) {
	var flags uintptr
	if raceEnabled {
		var n int
		var err error
		if trap == syscall.SYS_WRITE {
			n, err = syscall.Write(int(fd), b)
		} else {
			n, err = syscall.Read(int(fd), b)
		}
		if err != nil {
			return n, err.(syscall.Errno)
		}
		return n, 0
	}
	// recvfrom and sendto rather than read and write: the socket calls
	// skip the file layer (vfs_read, fdget_pos, rw_verify_area), and
	// MSG_NOSIGNAL spares a SIGPIPE a peer's reset would raise.
	if trap == syscall.SYS_WRITE {
		trap, flags = syscall.SYS_SENDTO, syscall.MSG_NOSIGNAL
	} else {
		trap = syscall.SYS_RECVFROM
	}
	r, _, e := syscall.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), flags, 0, 0)
	return int(r), e
}

func newRawIO(trap uintptr) *rawIO {
	o := &rawIO{trap: trap}
	o.fn = o.run
	return o
}

// Wrap wraps c; on a failure to reach its descriptor it is c as it is.
func Wrap(c *net.TCPConn) net.Conn {
	raw, err := c.SyscallConn()
	if err != nil {
		return c
	}
	try := newRawIO(syscall.SYS_WRITE)
	try.once = true
	return &conn{TCPConn: c, raw: raw, rd: newRawIO(syscall.SYS_READ), wr: newRawIO(syscall.SYS_WRITE), try: try}
}

func (c *conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, err := c.do(c.rd, c.raw.Read, b, "read")
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	return c.do(c.wr, c.raw.Write, b, "write")
}

// TryWrite writes what of b the socket takes now, without waiting for
// it to take more, and returns how much that was: a caller whose writes
// nearly always go whole into the socket's buffer need set a write
// deadline (a timer each time) only for the rest. One TryWrite at a time,
// as Write; a write deadline that has passed fails it.
func (c *conn) TryWrite(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	return c.do(c.try, c.raw.Write, b, "write")
}

// do runs o over b, with errors as net.Conn gives them: *net.OpError, the
// poller's own (closed, deadline) inside it.
func (c *conn) do(o *rawIO, wait func(func(uintptr) bool) error, b []byte, op string) (int, error) {
	o.buf, o.n, o.errno = b, 0, 0
	err := wait(o.fn)
	n := o.n
	o.buf = nil
	if err == nil && o.errno != 0 {
		err = os.NewSyscallError(op, o.errno)
	}
	if err != nil {
		return n, &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	return n, nil
}

// NetConn is the TCPConn (as tls.Conn's NetConn is its connection).
func (c *conn) NetConn() net.Conn { return c.TCPConn }
