package sip

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// A UDP listener's sockets (one per reader, SO_REUSEPORT) are steered:
// while one reader keeps up, the kernel puts every datagram on socket 0,
// and the others sleep on their empty sockets; under load it spreads the
// peers among all of them. One reader sees about twice as many datagrams
// per wake-up as each of two sharing the same traffic, and a wake-up (the
// scheduler parking and waking the reader, a recvmmsg and sendmmsg) is
// most of what a datagram costs at moderate rates: one socket used 0.84×
// the CPU of two at 2,000 calls/s. But one reader is one core at most,
// which a flood fills (issue 14), so past that the kernel spreads.
//
// The choice is the readers' own, made after a read, with no timer:
//   - concentrated → spread at once when socket 0's reader read
//     spreadStreak full batches in a row (a backlog it does not catch up
//     on), or when it was busy for spreadBusy of a steerWindow;
//   - spread → concentrated when all the readers together were busy for
//     less than concentrateBusy of a steerWindow, at least a window after
//     spreading: one reader carries that below spreadBusy (it is cheaper
//     per datagram than several), so the two do not flap; at most one
//     return per window. A streak of full batches alone (a reader
//     preempted for a few ms at a moderate rate) thus spreads for about a
//     window, not for good.
//
// Busy is the time from a read's return to the end of sending what it
// brought, on the Proxy's clock (preemption counts as busy: that errs on
// the side of spreading). A datagram already on a socket when the program
// changes stays there; every reader keeps reading its own socket, so it is
// read all the same. A peer moved at a switch may have a datagram or two
// taken out of order, as UDP allows.

const (
	steerWindow     = time.Second
	spreadStreak    = 32 // 512 datagrams behind; the buffer holds thousands
	spreadBusy      = 0.6
	concentrateBusy = 0.45
)

// spreadIndex is what the spreading program returns: no socket of the
// group, so the kernel falls back to its hash of the peer's address.
const spreadIndex = ^uint32(0)

// steer is one UDP listener's steering and its readers' counters.
type steer struct {
	socks  []udpSocket
	now    func() time.Time
	log    *zap.Logger
	spread atomic.Bool
	since  atomic.Int64 // the window's start, Unix ns
	mu     sync.Mutex   // the decision at a window's end, or a switch
	stats  []readerStats
}

// readerStats are one reader's counters, each on its own cache line: a
// reader adds to them once a batch.
type readerStats struct {
	datagrams atomic.Uint64
	batches   atomic.Uint64 // reads counted by woke
	finished  atomic.Uint64 // of them, those done has seen sent
	busy      atomic.Int64  // ns, since the window began
	_         [32]byte
}

// newSteer steers socks (two or more), concentrated to begin with; nil
// (the kernel's spread, always) where the program cannot be attached.
func newSteer(socks []udpSocket, now func() time.Time, log *zap.Logger) *steer {
	st := &steer{socks: socks, now: now, log: log, stats: make([]readerStats, len(socks))}
	if err := st.attach(0); err != nil {
		log.Warn("cannot steer UDP readers: the kernel spreads peers among them at every rate", zap.Error(err))
		return nil
	}
	st.since.Store(now().UnixNano())
	return st
}

func (st *steer) attach(index uint32) error {
	raw, err := st.socks[0].c.SyscallConn()
	if err != nil {
		return err
	}
	return steerTo(raw, index)
}

// woke is called by reader k when a read brought n datagrams; it counts
// them, makes any decision due, and returns the time to pass to done.
// streak is the reader's own count of full batches in a row.
func (st *steer) woke(k, n int, streak *int) int64 {
	now := st.now().UnixNano()
	rs := &st.stats[k]
	rs.datagrams.Add(uint64(n))
	rs.batches.Add(1)
	if k == 0 && !st.spread.Load() {
		if n < udpBatch {
			*streak = 0
		} else if *streak++; *streak >= spreadStreak {
			*streak = 0
			st.mu.Lock()
			if !st.spread.Load() {
				st.switchTo(true, now)
			}
			st.mu.Unlock()
			return now
		}
	}
	if now-st.since.Load() >= int64(steerWindow) && st.mu.TryLock() {
		st.decide(now)
		st.mu.Unlock()
	}
	return now
}

// done is called by reader k when it has sent what the read brought.
func (st *steer) done(k int, woke int64) {
	st.stats[k].busy.Add(st.now().UnixNano() - woke)
	st.stats[k].finished.Add(1)
}

// decide ends the window at now (st.mu held): spread if socket 0's reader
// was too busy, concentrate if all of them together were idle enough.
func (st *steer) decide(now int64) {
	elapsed := now - st.since.Load()
	if elapsed < int64(steerWindow) {
		return // another reader has just decided
	}
	var busy0, busy int64
	for k := range st.stats {
		b := st.stats[k].busy.Swap(0)
		if k == 0 {
			busy0 = b
		}
		busy += b
	}
	spread := st.spread.Load()
	switch {
	case !spread && float64(busy0) >= spreadBusy*float64(elapsed):
		st.switchTo(true, now)
	case spread && float64(busy) < concentrateBusy*float64(elapsed):
		st.switchTo(false, now)
	default:
		st.since.Store(now)
	}
}

// switchTo attaches the program that spreads or concentrates (st.mu held)
// and begins a window. A failure is logged, and the steering stays.
func (st *steer) switchTo(spread bool, now int64) {
	index := uint32(0)
	if spread {
		index = spreadIndex
	}
	st.since.Store(now)
	for k := range st.stats {
		st.stats[k].busy.Store(0)
	}
	if err := st.attach(index); err != nil {
		st.log.Warn("cannot steer UDP readers", zap.Bool("spread", spread), zap.Error(err))
		return
	}
	st.spread.Store(spread)
	st.log.Info("UDP readers steered", zap.Stringer("listener", localAddr(st.socks[0].c.LocalAddr())),
		zap.Bool("spread", spread), zap.Int("sockets", len(st.socks)))
}
