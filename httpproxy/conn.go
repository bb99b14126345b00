package httpproxy

import (
	"net"
	"syscall"
	"time"

	"clb/rawtcp"
)

// deadlineConn is a connection with the timeouts of the exchange under way.
// Its owner starts each phase with the time it began, which it has read
// once for the whole request: reads are either bounded in all (readFrom: a
// head is awaited, so that a slow client cannot hold a connection by
// dribbling) or "no progress for the timeout" (readProgress: bodies), and
// writes are "no progress" (writeProgress). The first read or write of a
// progress phase arms its deadline from the phase's time; only later ones,
// in a long body, read the clock.
//
// A deadline is armed an eighth of its timeout late, and one already armed
// that falls within [wanted, wanted + timeout/8] is kept: a timeout fires
// no earlier than configured and at most an eighth later, and a keep-alive
// connection re-arms its timers about once per eighth of a timeout instead
// of on every request (each re-arm is a runtime timer change and two clock
// reads; with a clock read per write they were ~4% of the CPU in profiles).
//
// (Waiting for readability before reading, to save the read that says "try
// again", is not safe: Go's poller forgets a readiness it has already seen
// when a raw read begins, and the wait would outlast data already there.)
type deadlineConn struct {
	net.Conn
	raw     syscall.RawConn  // nil if the connection has none
	clock   func() time.Time // time.Now; tests set another
	untimed bool             // an event loop's: the loop keeps its timeouts

	rd, wr     time.Duration // the phase's timeouts; 0: none
	rdFixed    bool          // reads end by rdAt+rd whatever their progress
	rdAt, wrAt time.Time     // the phase's start, for its next read or write; zero: read the clock
	readSet    time.Time     // the read deadline armed
	writeSet   time.Time
	written    int64 // bytes written, for the access log
}

// newDeadlineConn wraps c; a plain TCP connection (accepted, woken from
// parking, or dialed) is read and written by raw system calls (rawtcp).
func newDeadlineConn(c net.Conn) *deadlineConn {
	if tc, ok := c.(*net.TCPConn); ok {
		c = rawtcp.Wrap(tc)
	}
	_, untimed := c.(untimedConn)
	dc := &deadlineConn{Conn: c, clock: time.Now, untimed: untimed}
	if sc, ok := c.(syscall.Conn); ok {
		dc.raw, _ = sc.SyscallConn()
	}
	return dc
}

// readFrom bounds the reads from now on to end by start+timeout (0: no
// bound).
func (c *deadlineConn) readFrom(start time.Time, timeout time.Duration) {
	c.rd, c.rdFixed, c.rdAt = timeout, true, start
}

// readProgress bounds each read from now on to timeout after the one
// before; start is the time of the first (zero: read the clock then).
func (c *deadlineConn) readProgress(start time.Time, timeout time.Duration) {
	c.rd, c.rdFixed, c.rdAt = timeout, false, start
}

// writeProgress is readProgress for writes.
func (c *deadlineConn) writeProgress(start time.Time, timeout time.Duration) {
	c.wr, c.wrAt = timeout, start
}

// untimedConn is a connection whose owner keeps its timeouts (an event
// loop's, whose Set*Deadline do nothing): arming them is skipped, and
// with it a clock read per read.
type untimedConn interface{ untimed() }

func (c *deadlineConn) Read(b []byte) (int, error) {
	if !c.untimed && (c.rd > 0 || !c.readSet.IsZero()) {
		var want time.Time
		if c.rd > 0 {
			at := c.rdAt
			switch {
			case at.IsZero():
				at = c.clock()
			case !c.rdFixed:
				c.rdAt = time.Time{} // good for the first read only
			}
			want = at.Add(c.rd)
		}
		if err := c.arm(&c.readSet, want, c.rd, c.Conn.SetReadDeadline); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(b)
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	if !c.untimed && (c.wr > 0 || !c.writeSet.IsZero()) {
		var want time.Time
		if c.wr > 0 {
			at := c.wrAt
			if at.IsZero() {
				at = c.clock()
			}
			c.wrAt = time.Time{}
			want = at.Add(c.wr)
		}
		if err := c.arm(&c.writeSet, want, c.wr, c.Conn.SetWriteDeadline); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Write(b)
	c.written += int64(n)
	return n, err
}

// arm makes the deadline *armed* fall within [want, want+timeout/8] (want
// zero: none).
func (c *deadlineConn) arm(armed *time.Time, want time.Time, timeout time.Duration, set func(time.Time) error) error {
	switch {
	case want.IsZero() && armed.IsZero():
		return nil
	case !want.IsZero() && !armed.Before(want) && armed.Sub(want) <= timeout/8:
		return nil // still good
	case !want.IsZero():
		want = want.Add(timeout / 8)
	}
	if err := set(want); err != nil {
		return err
	}
	*armed = want
	return nil
}
