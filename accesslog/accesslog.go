// Package accesslog owns clb's access log: one zap line per HTTP request and
// per SIP request clb forwards or answers itself, under the logger named
// "access" in the same stream as clb's other logs (log.access), sampled by
// key (log.access_sample).
//
// The front ends fill a Line in memory they reuse (one per client connection
// or per SIP reader goroutine) and write it only after Check said yes, so
// that the request path pays a pointer load when access logging is off and,
// when it is on, nothing for the requests sampling leaves out. A Line is a
// zapcore.ObjectMarshaler written as one inline field: its bytes (a path,
// an address) are encoded as they are, without the string conversions that
// fields built at the call site would allocate.
//
// Sampling is by key: a session's requests are all logged or none are, so
// that a sampled session can be followed from its first request to its last.
// A line without a key (a request refused before it had one) is sampled at
// random at the same rate.
//
// Concurrency: a *Log is safe for concurrent use; Set may run at any time (a
// reload) and takes effect for the lines checked after it. A nil *Log logs
// nothing. A Line belongs to one goroutine.
package accesslog

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The messages of the lines, one per protocol.
const (
	MsgHTTP = "http request"
	MsgSIP  = "sip request"
)

// Log is the access log.
type Log struct {
	log *zap.Logger
	// on is nil while access logging is off; else the share of keys
	// logged, as a threshold on a 64-bit hash.
	on atomic.Pointer[uint64]
}

// New is an access log writing through log (named "access" here); it is off
// until Set turns it on.
func New(log *zap.Logger) *Log {
	return &Log{log: log.Named("access")}
}

// Set turns access logging on or off; sample is the share of keys logged,
// in (0, 1] (1 logs every request).
func (l *Log) Set(on bool, sample float64) {
	if !on {
		l.on.Store(nil)
		return
	}
	t := uint64(math.MaxUint64)
	if sample < 1 {
		t = uint64(sample * (1 << 64))
	}
	l.on.Store(&t)
}

// On reports whether access logging is on: a front end takes a request's
// start time only then.
func (l *Log) On() bool { return l != nil && l.on.Load() != nil }

// Check is the entry to write the line of a request with key to, or nil
// when access logging is off or the key is not sampled. msg is MsgHTTP or
// MsgSIP.
func (l *Log) Check(msg, key string) *zapcore.CheckedEntry {
	if l == nil {
		return nil
	}
	t := l.on.Load()
	if t == nil {
		return nil
	}
	if *t != math.MaxUint64 && !sampled(key, *t) {
		return nil
	}
	return l.log.Check(zap.InfoLevel, msg)
}

// sampled decides by key: a hash of it below the threshold. The hash is
// mixed apart from the one the ramps admit keys by (loadfactor), so that the
// keys logged are not those an instance coming back takes first.
func sampled(key string, threshold uint64) bool {
	if key == "" {
		return rand.Uint64() < threshold
	}
	h := xxhash.Sum64String(key) ^ 0x9e3779b97f4a7c15
	// splitmix64's finaliser.
	h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
	h = (h ^ h>>27) * 0x94d049bb133111eb
	h ^= h >> 31
	return h < threshold
}

// Line is one request's fields. A front end resets it (Reset) for each
// request, fills what it knows as it goes, and writes it with Write. Empty
// strings, a zero status and a zero address are left out of the line.
type Line struct {
	SIP bool // which protocol's fields the line has

	Method string
	// Path is the HTTP request target up to any '?' (the query can hold
	// credentials; the key rules' query values are in Key when they give it).
	Path []byte
	// CallID is a SIP request's Call-ID.
	CallID string
	// Status is the HTTP status sent to the client; for SIP, the code of
	// clb's own answer (0 when the request was forwarded).
	Status int
	// Key is the request's key (BEKey), as clb routes it.
	Key string
	// Instance is where the request went (its owner, or the replica partner
	// after a retry); Replica the key's replica partner named to it;
	// Previous the instance that served the session before, after a
	// failover or a ramp.
	Instance, Replica, Previous string
	// Retried: the owner could not be reached and the request went to its
	// replica partner (HTTP).
	Retried bool
	// Outcome is what became of it: "relayed" (the instance's answer,
	// HTTP), "cut_short" (its body failed midway, HTTP), "forwarded" (to an
	// instance, SIP), "outward" (out of the cluster, SIP), "failed" (it
	// could not be sent, SIP), or, when clb answered instead of an
	// instance, the error kind clb_errors_total counts it under
	// ("no_instance", "malformed_request", "unreachable", "max_forwards", …).
	Outcome string
	// Bytes is what went to the client for the response, head included
	// (HTTP).
	Bytes int64
	// Duration runs from the request head read to the response sent
	// (HTTP).
	Duration time.Duration
	// Client is where the request came from.
	Client netip.AddrPort
	// Transport is the SIP transport it came over.
	Transport string

	addr  [64]byte
	field [1]zap.Field
}

// Reset empties the line for the next request.
func (ln *Line) Reset(sip bool) {
	client := ln.Client
	*ln = Line{SIP: sip, Client: client}
}

// Write writes the line to ce, which Check returned (not nil).
func (ln *Line) Write(ce *zapcore.CheckedEntry) {
	// The field is kept in the line: a slice made at this call would
	// escape to the heap with the core's Write.
	ln.field[0] = zap.Inline(ln)
	ce.Write(ln.field[:]...)
}

// MarshalLogObject writes the fields (zapcore.ObjectMarshaler).
func (ln *Line) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	str := func(k, v string) {
		if v != "" {
			enc.AddString(k, v)
		}
	}
	if ln.SIP {
		enc.AddString("protocol", "sip")
	} else {
		enc.AddString("protocol", "http")
	}
	str("method", ln.Method)
	if ln.SIP {
		str("call_id", ln.CallID)
	} else if len(ln.Path) > 0 {
		enc.AddByteString("path", ln.Path)
	}
	if ln.Status != 0 {
		enc.AddInt("status", ln.Status)
	}
	str("key", ln.Key)
	str("instance", ln.Instance)
	str("replica", ln.Replica)
	str("previous", ln.Previous)
	str("outcome", ln.Outcome)
	if ln.SIP {
		str("transport", ln.Transport)
	} else {
		enc.AddBool("retried", ln.Retried)
		enc.AddInt64("bytes", ln.Bytes)
		enc.AddDuration("duration", ln.Duration)
	}
	if ln.Client.IsValid() {
		enc.AddByteString("client", ln.Client.AppendTo(ln.addr[:0]))
	}
	return nil
}
