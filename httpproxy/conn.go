package httpproxy

import (
	"net"
	"syscall"
	"time"
)

// deadlineConn is a connection with the timeouts of the exchange under way:
// a fixed read deadline while a head is awaited (so that a slow client
// cannot hold a connection by dribbling), else "no progress for read or
// write". A deadline is re-armed only when it has moved by an eighth of its
// timeout: re-arming a runtime timer on every read and write cost 5% in
// profiles.
//
// (Waiting for readability before reading, to save the read that says "try
// again", is not safe: Go's poller forgets a readiness it has already seen
// when a raw read begins, and the wait would outlast data already there.)
type deadlineConn struct {
	net.Conn
	raw         syscall.RawConn // nil if the connection has none
	deadline    time.Time       // when set, the read deadline
	read, write time.Duration
	readSet     time.Time // the read deadline in force
	writeSet    time.Time
	written     int64 // bytes written, for the access log
}

func newDeadlineConn(c net.Conn) *deadlineConn {
	dc := &deadlineConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		dc.raw, _ = sc.SyscallConn()
	}
	return dc
}

func (c *deadlineConn) Read(b []byte) (int, error) {
	d := c.deadline
	if d.IsZero() && c.read > 0 {
		d = time.Now().Add(c.read)
		if d.Sub(c.readSet) < c.read/8 {
			d = c.readSet // still far enough away
		}
	}
	if !d.Equal(c.readSet) {
		if err := c.Conn.SetReadDeadline(d); err != nil {
			return 0, err
		}
		c.readSet = d
	}
	return c.Conn.Read(b)
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	if c.write > 0 {
		if d := time.Now().Add(c.write); d.Sub(c.writeSet) >= c.write/8 {
			if err := c.Conn.SetWriteDeadline(d); err != nil {
				return 0, err
			}
			c.writeSet = d
		}
	}
	n, err := c.Conn.Write(b)
	c.written += int64(n)
	return n, err
}
