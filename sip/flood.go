package sip

import (
	"bytes"

	"go.uber.org/zap"

	"clb/config"
	"clb/limits"
	"clb/metrics"
)

// flood is the SIP flood control of SPEC section 12, swapped whole on
// reload.
type flood struct {
	limiter      *limits.Limiter // nil: no rate limit
	dropScanners bool
}

func newFlood(l config.Limits) *flood {
	return &flood{limiter: limits.New(l.SIPConfig()), dropScanners: l.SIP.DropScanners}
}

// admit applies flood control to a request from outside the cluster:
// false means it was answered (503 with Retry-After) or dropped (a known
// scanner, or an ACK over the rate). inDialog requests (clb's own Route on
// top) count against the source's rate but pass up to twice it, so that a
// flood cannot end calls already set up.
func (p *Proxy) admit(in *inbound, sc *scratch, v *view, inDialog bool) bool {
	f := p.flood.Load()
	if f.dropScanners && isScanner(v.w.header("user-agent")) {
		p.metrics.Error("sip", "scanner")
		return false
	}
	if f.limiter == nil || sc.admitted {
		return true
	}
	r := f.limiter.Take(in.src.Addr(), inDialog, p.now())
	if r.Verdict == limits.Allow {
		return true
	}
	if r.Log {
		p.log.Warn("source over its SIP rate", zap.Stringer("source", in.src.Addr()), zap.Uint64("limited", r.Limited))
	}
	if v.method == "ACK" {
		p.metrics.Error("sip", "rate_limited")
		return false
	}
	p.reply(in, sc, v, refusal{code: 503, reason: "Service Unavailable", retryAfter: f.limiter.RetryAfter(), kind: "rate_limited"})
	return false
}

// refuseEarly applies flood control before the request is parsed, which
// is most of what a message costs (sipgo's field parsers): a source over
// its rate is refused at the cost of the wire scan, so that a flood takes
// less of the reader from everyone else. It takes the token of a request
// that may not be inside a dialog (none carries clb's bekey parameter) and
// does not come from an instance's host; admit decides the others, and
// those it let through here (sc.admitted). True: refused (answered 503, or
// dropped).
func (p *Proxy) refuseEarly(in *inbound, sc *scratch) bool {
	f := p.flood.Load()
	w := &sc.wire
	start := w.data[:min(w.startLine, len(w.data))]
	if f.limiter == nil || len(start) == 0 || bytes.HasPrefix(start, []byte("SIP/")) ||
		bytes.Contains(w.data, []byte(paramKey+"=")) || p.settings.Load().hosts[in.src.Addr()] {
		return false
	}
	if i := w.first(fieldMaxForwards); i >= 0 {
		if mf, ok := digits(w.value(w.lines[i]), 1<<32-1); ok && mf == 0 {
			return false // answered 483 whatever the rate, as the full path does
		}
	}
	if f.dropScanners && isScanner(w.header("user-agent")) {
		p.metrics.Error("sip", "scanner")
		return true
	}
	r := f.limiter.Take(in.src.Addr(), false, p.now())
	if r.Verdict == limits.Allow {
		sc.admitted = true
		return false
	}
	if r.Log {
		p.log.Warn("source over its SIP rate", zap.Stringer("source", in.src.Addr()), zap.Uint64("limited", r.Limited))
	}
	method, _, _ := bytes.Cut(start, sp)
	if string(method) == "ACK" {
		p.metrics.Error("sip", "rate_limited")
		return true
	}
	v := &sc.view
	*v = view{w: w, request: true, method: metrics.Method(method), maxFwd: -1}
	p.reply(in, sc, v, refusal{code: 503, reason: "Service Unavailable", retryAfter: f.limiter.RetryAfter(), kind: "rate_limited"})
	return true
}

// scanners are User-Agent words of SIP scanning tools, lower case.
var scanners = [...]string{"friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sundayddr", "vaxsipuseragent", "pplsip"}

func isScanner(ua []byte) bool {
	if len(ua) == 0 {
		return false
	}
	var buf [128]byte
	lower := buf[:0]
	for _, c := range ua[:min(len(ua), len(buf))] {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower = append(lower, c)
	}
	for _, s := range scanners {
		if bytes.Contains(lower, []byte(s)) {
			return true
		}
	}
	return false
}
