// Package limits owns flood control (SPEC section 12): a token bucket per
// source address, in a table of bounded size, so that one source cannot
// take an instance's or clb's capacity from the others, and a flood from
// spoofed sources cannot grow clb's memory.
//
// A Limiter is given the time by its caller (no clock of its own), so tests
// step it by hand. It is safe for concurrent use: the table is sharded by
// address, each shard under its own mutex, so readers of different sources
// rarely meet.
package limits

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// Verdict is what a Limiter says of one request.
type Verdict uint8

const (
	// Allow: within the source's rate.
	Allow Verdict = iota
	// Limit: over it; answer 503 or 429 with Retry-After.
	Limit
)

// Config is one protocol's limits.
type Config struct {
	// Rate is requests per second per source; 0 turns the limiter off.
	Rate float64
	// Burst is how many requests a source may send at once. Default Rate.
	Burst float64
	// Exempt sources are never limited.
	Exempt []netip.Prefix
	// MaxSources bounds the table; the least recently seen source is
	// forgotten first. Default 65,536.
	MaxSources int
	// LogEvery is how often at most a limited source is reported by
	// Limiter.Limited's log flag. Default 10 s.
	LogEvery time.Duration
}

// DefaultMaxSources is the table's bound when Config gives none: about
// 15 MB (some 230 bytes a source), whatever the number of sources.
const DefaultMaxSources = 65_536

const shards = 64

// Limiter applies a Config.
type Limiter struct {
	cfg    Config
	seed   maphash.Seed
	shards [shards]shard
}

type shard struct {
	mu      sync.Mutex
	entries map[netip.Addr]*entry
	// LRU list: head the most recently seen.
	head, tail *entry
	max        int
}

// entry is one source's buckets: tokens at the rate, and dialog at twice
// it, which lets requests inside established dialogs through when tokens
// are gone, so that a flood cannot end calls already set up.
type entry struct {
	addr         netip.Addr
	tokens       float64
	dialog       float64
	at           int64 // of the last refill, Unix ns
	logged       int64 // last reported, Unix ns; 0 never
	prev, next   *entry
	limitedSince uint64 // requests limited since last reported
}

// New makes a Limiter, or nil when cfg.Rate is 0 (a nil Limiter allows
// everything, at the cost of a nil check).
func New(cfg Config) *Limiter {
	if cfg.Rate <= 0 {
		return nil
	}
	if cfg.Burst <= 0 {
		cfg.Burst = cfg.Rate
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = DefaultMaxSources
	}
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = 10 * time.Second
	}
	l := &Limiter{cfg: cfg, seed: maphash.MakeSeed()}
	per := max(1, cfg.MaxSources/shards)
	for i := range l.shards {
		l.shards[i] = shard{entries: make(map[netip.Addr]*entry), max: per}
	}
	return l
}

// Exempt reports whether src is never limited.
func (l *Limiter) Exempt(src netip.Addr) bool { return InAny(l.cfg.Exempt, src) }

// InAny reports whether a is in one of ps: the exempt test, for limits
// kept outside a Limiter (connections per source).
func InAny(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Report is the outcome of Take: the verdict, and whether the caller
// should log that src is being limited (at most once per LogEvery per
// source), with how many of its requests were limited since the last line.
type Report struct {
	Verdict Verdict
	Log     bool
	Limited uint64
}

// Take counts one request of src at now. inDialog marks a request inside
// an established dialog: it counts against the source's rate like any
// other but is let through up to twice the rate.
func (l *Limiter) Take(src netip.Addr, inDialog bool, now time.Time) Report {
	if l == nil || l.Exempt(src) {
		return Report{}
	}
	src = src.Unmap()
	sh := &l.shards[maphash.Comparable(l.seed, src)%shards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ns := now.UnixNano()
	e := sh.get(src, l.cfg, ns)
	if dt := float64(ns-e.at) / 1e9; dt > 0 {
		e.tokens = min(l.cfg.Burst, e.tokens+dt*l.cfg.Rate)
		e.dialog = min(2*l.cfg.Burst, e.dialog+dt*2*l.cfg.Rate)
		e.at = ns
	}
	ok := false
	switch {
	case e.tokens >= 1:
		e.tokens--
		ok = true
	case inDialog && e.dialog >= 1:
		ok = true
	}
	if inDialog && e.dialog >= 1 {
		e.dialog--
	}
	if ok {
		return Report{}
	}
	e.limitedSince++
	r := Report{Verdict: Limit}
	if e.logged == 0 || time.Duration(ns-e.logged) >= l.cfg.LogEvery {
		r.Log, r.Limited = true, e.limitedSince
		e.logged, e.limitedSince = ns, 0
	}
	return r
}

// RetryAfter is when a limited source has a token again, in whole seconds
// (at least 1).
func (l *Limiter) RetryAfter() int {
	if l == nil {
		return 1
	}
	return max(1, int(1/l.cfg.Rate+0.999))
}

// Sources is how many sources the table holds now.
func (l *Limiter) Sources() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.entries)
		sh.mu.Unlock()
	}
	return n
}

// get finds or makes src's entry, first in the LRU list; a new source
// starts with a full burst. Beyond the bound the least recently seen source
// is forgotten and its entry reused, so memory stays flat under a flood of
// spoofed sources (each such source then gets a fresh burst: the bound on
// memory costs precision, not safety, as instances see at most the table's
// size in bursts per round of the flood).
func (sh *shard) get(src netip.Addr, cfg Config, now int64) *entry {
	if e, ok := sh.entries[src]; ok {
		sh.unlink(e)
		sh.push(e)
		return e
	}
	var e *entry
	if len(sh.entries) >= sh.max {
		e = sh.tail
		sh.unlink(e)
		delete(sh.entries, e.addr)
		*e = entry{}
	} else {
		e = new(entry)
	}
	e.addr, e.tokens, e.dialog, e.at = src, cfg.Burst, 2*cfg.Burst, now
	sh.entries[src] = e
	sh.push(e)
	return e
}

func (sh *shard) push(e *entry) {
	e.prev, e.next = nil, sh.head
	if sh.head != nil {
		sh.head.prev = e
	}
	sh.head = e
	if sh.tail == nil {
		sh.tail = e
	}
}

func (sh *shard) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		sh.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		sh.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
