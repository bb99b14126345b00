package httpproxy

import (
	"net"
	"testing"
	"time"
)

// deadlineRecorder is a connection that records the deadlines set on it;
// reads and writes move no bytes.
type deadlineRecorder struct {
	net.Conn
	read, write   time.Time
	reads, writes int // deadlines set
}

func (r *deadlineRecorder) Read(b []byte) (int, error)  { return len(b), nil }
func (r *deadlineRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *deadlineRecorder) SetReadDeadline(t time.Time) error {
	r.read, r.reads = t, r.reads+1
	return nil
}

func (r *deadlineRecorder) SetWriteDeadline(t time.Time) error {
	r.write, r.writes = t, r.writes+1
	return nil
}

// TestDeadlinesPerPhase: over a keep-alive connection's requests, each
// deadline in force is never earlier than its phase asks and at most an
// eighth of its timeout later, and the timers are re-armed about once per
// eighth of a timeout, not per request.
func TestDeadlinesPerPhase(t *testing.T) {
	const (
		idle   = 8 * time.Second
		header = 800 * time.Millisecond
		write  = 4 * time.Second
	)
	rec := &deadlineRecorder{}
	dc := newDeadlineConn(rec)
	now := time.Unix(1_000_000, 0)
	dc.clock = func() time.Time { return now }
	within := func(what string, got, want time.Time, timeout time.Duration) {
		t.Helper()
		if got.Before(want) || got.Sub(want) > timeout/8 {
			t.Fatalf("%s: deadline %v after the phase began, want within [%v, %v]", what, got.Sub(now), want.Sub(now), want.Add(timeout/8).Sub(now))
		}
	}
	var b [1]byte
	// 10,000 requests 1 ms apart (10 s): an idle wait, a head already
	// buffered (no read), a response written.
	for i := range 10_000 {
		now = now.Add(time.Millisecond)
		dc.readFrom(now, idle)
		_, _ = dc.Read(b[:])
		within("idle", rec.read, now.Add(idle), idle)
		dc.readFrom(now, header) // the head was in the buffer: no read
		dc.writeProgress(now, write)
		_, _ = dc.Write(b[:])
		within("write", rec.write, now.Add(write), write)
		if i == 0 && (rec.reads != 1 || rec.writes != 1) {
			t.Fatalf("first request: %d read and %d write deadlines set, want 1 and 1", rec.reads, rec.writes)
		}
	}
	// Re-armed once per eighth of a timeout: 10 s / 1 s and 10 s / 0.5 s,
	// each give or take one.
	if rec.reads > 11 || rec.writes > 21 {
		t.Errorf("10,000 requests over 10 s set %d read and %d write deadlines, want about 10 and 20", rec.reads, rec.writes)
	}

	// A head that needs reads: its shorter deadline is armed, and holds
	// however the reads go (a dribbling client).
	now = now.Add(time.Millisecond)
	start := now
	dc.readFrom(start, header)
	for range 10 {
		_, _ = dc.Read(b[:])
		within("head", rec.read, start.Add(header), header)
		now = now.Add(50 * time.Millisecond)
	}
	// A body: no progress for idle, whatever its length.
	dc.readProgress(time.Time{}, idle)
	for range 100 {
		now = now.Add(300 * time.Millisecond)
		_, _ = dc.Read(b[:])
		within("body", rec.read, now.Add(idle), idle)
	}
	// A long response: each write is given the whole timeout from its own
	// time, not the phase's.
	dc.writeProgress(now, write)
	for range 100 {
		_, _ = dc.Write(b[:])
		within("long write", rec.write, now.Add(write), write)
		now = now.Add(300 * time.Millisecond)
	}
	// No timeout: the deadline is cleared, once.
	dc.readFrom(time.Time{}, 0)
	set := rec.reads
	for range 3 {
		_, _ = dc.Read(b[:])
	}
	if !rec.read.IsZero() || rec.reads != set+1 {
		t.Errorf("without a timeout: read deadline %v after %d sets, want none after 1", rec.read, rec.reads-set)
	}
}
