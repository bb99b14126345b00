// Package health owns the instances' health: active probes (SIP OPTIONS over
// each instance's transport, GET of health.http_path), passive reports from
// the front ends, and the rise and fall thresholds that turn them into the
// balancer's up and down.
//
// One round of probes is CheckOnce; Run only adds the ticker, the retiring of
// finished ramps (balancer.Tick), and, with active probes off, the return of
// an instance marked down by passive failures after health.interval. An
// instance's X-CLB-Started anchors its ramp, so that several clb nodes ramp
// it alike (SPEC section 11), a node started meanwhile included
// (SetJoinRamps).
//
// Concurrency: a Checker is safe for concurrent use. Probes of a round run in
// parallel, each bounded by health.timeout, without the Checker's lock; their
// results are applied under it, and the balancer is told only of real
// transitions, still under it, so that verdicts reach the balancer in the
// order they were reached. Lock order: Checker.mu before the balancer's
// locks (setUp calls Balancer.SetHealth holding it). SetHealth waits for no
// hashing build (see balancer), so a reload does not hold up a verdict or
// the request that reports a passive failure; nothing the balancer calls
// may call the Checker.
package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"clb/balancer"
	"clb/certs"
	"clb/config"
	"clb/metrics"
	"clb/policy"
	"clb/sip/framing"
)

// historyLen is how many rounds of an instance's health are kept for the
// status page: minutes at the default interval.
const historyLen = 90

// Checker checks the instances and tells the balancer.
type Checker struct {
	bal *balancer.Balancer
	m   *metrics.Metrics
	log *zap.Logger
	now func() time.Time

	// tls is the trust put in tls:// and https:// instances (SetTLS); the
	// zero Store means the system's roots.
	tls atomic.Pointer[certs.Store]

	mu    sync.RWMutex // Report(ok) reads only: it runs for every HTTP response
	cfg   config.Health
	insts map[string]*instance
	order []string
	// joinRamps: this node is one of several (SetJoinRamps); listed says
	// the instances of the start have been listed.
	joinRamps, listed bool
}

// instance is one instance's health record.
type instance struct {
	cfg       config.Instance
	up        bool
	successes int // in a row
	failures  int // in a row, probes and reports
	downAt    time.Time
	last      Probe
	history   []bool // oldest first, at most historyLen
	atStart   bool   // listed when the Checker started: live at f = 1 until probed
}

// Probe is the outcome of one round of probes of an instance.
type Probe struct {
	At      time.Time
	OK      bool
	Latency time.Duration // of the slowest answer
	Error   string
	// Started is when the instance says it started (X-CLB-Started in its
	// answers), zero if it does not say.
	Started time.Time
}

// Status is what the admin API shows of an instance's health.
type Status struct {
	Up        bool
	Successes int
	Failures  int
	Last      Probe
	History   []bool // last rounds, oldest first: true passed
}

// New makes a Checker for the instances of cfg; every instance starts up
// (SPEC section 8). now is the clock; nil means time.Now.
func New(bal *balancer.Balancer, m *metrics.Metrics, log *zap.Logger, now func() time.Time) *Checker {
	if log == nil {
		log = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	return &Checker{bal: bal, m: m, log: log, now: now, insts: map[string]*instance{}}
}

// SetTLS sets the TLS material probes of tls:// and https:// instances
// verify them with (clb's tls.instance_ca); without it, the system's roots.
func (c *Checker) SetTLS(s *certs.Store) { c.tls.Store(s) }

func (c *Checker) tlsStore() *certs.Store {
	if s := c.tls.Load(); s != nil {
		return s
	}
	return &certs.Store{}
}

// Update sets the settings and the instances at once; see SetConfig and
// SetInstances.
func (c *Checker) Update(cfg config.Health, instances []config.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg = cfg
	c.setInstances(instances)
}

// SetConfig sets the settings (at start and on reload).
func (c *Checker) SetConfig(cfg config.Health) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg = cfg
}

// SetInstances is given the whole instance list on every change (a
// membership subscriber): an instance that remains keeps its record, a new
// one starts up, a removed one's record is dropped.
func (c *Checker) SetInstances(instances []config.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setInstances(instances)
}

// SetJoinRamps tells the Checker that this node is one of several clb
// nodes (SPEC section 11; etcd or listen.advertise configured). An instance
// of the start whose first probe answer says it started so recently that
// its ramp from then (as setUp anchors it) is not over is put on that ramp
// rather than left at f = 1: the other nodes, which saw it come back, are
// ramping it, and a node started (or restarted in turn) meanwhile must
// route its keys as they do. A single node keeps SPEC section 3's rule:
// instances found healthy at its start begin at f = 1.
func (c *Checker) SetJoinRamps(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.joinRamps = on
}

func (c *Checker) setInstances(instances []config.Instance) {
	insts := make(map[string]*instance, len(instances))
	c.order = c.order[:0]
	for _, inst := range instances {
		rec := c.insts[inst.Name]
		if rec == nil {
			rec = &instance{up: true, atStart: !c.listed}
		}
		rec.cfg = inst
		insts[inst.Name] = rec
		c.order = append(c.order, inst.Name)
	}
	c.insts = insts
	c.listed = c.listed || len(instances) > 0
}

// Status is the health record of the instance named name.
func (c *Checker) Status(name string) (Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec, ok := c.insts[name]
	if !ok {
		return Status{}, false
	}
	return Status{Up: rec.up, Successes: rec.successes, Failures: rec.failures, Last: rec.last,
		History: append([]bool(nil), rec.history...)}, true
}

// Report is a passive verdict from the front ends: ok false for a transport
// error or a timeout on real traffic. fall failures in a row mark the
// instance down at once.
func (c *Checker) Report(name string, ok bool) {
	if ok {
		c.mu.RLock()
		rec := c.insts[name]
		clean := rec == nil || rec.failures == 0
		c.mu.RUnlock()
		if clean {
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.insts[name]
	if rec == nil {
		return
	}
	if ok {
		rec.failures = 0
		return
	}
	rec.successes = 0
	rec.failures++
	if rec.up && rec.failures >= c.cfg.Fall {
		c.setUp(rec, false, "passive", time.Time{})
	}
}

// CheckOnce probes every instance once, in parallel, and applies the
// results: fall failed rounds in a row mark an instance down, rise passed
// rounds in a row mark it up again.
func (c *Checker) CheckOnce(ctx context.Context) {
	c.mu.Lock()
	cfg := c.cfg
	targets := make([]config.Instance, 0, len(c.order))
	for _, name := range c.order {
		targets = append(targets, c.insts[name].cfg)
	}
	c.mu.Unlock()

	results := make([]Probe, len(targets))
	var wg sync.WaitGroup
	for i, inst := range targets {
		wg.Go(func() { results[i] = c.probe(ctx, cfg, inst) })
	}
	wg.Wait()

	c.mu.Lock()
	defer c.mu.Unlock()
	for i, inst := range targets {
		rec := c.insts[inst.Name]
		if rec == nil {
			continue // removed by a reload meanwhile
		}
		c.apply(rec, results[i])
	}
}

func (c *Checker) apply(rec *instance, p Probe) {
	if first := rec.last.At.IsZero() && rec.atStart; first && c.joinRamps && p.OK && rec.up {
		c.joinRamp(rec, p.Started)
	}
	rec.last = p
	rec.history = append(rec.history, p.OK)
	if len(rec.history) > historyLen {
		rec.history = rec.history[1:]
	}
	if p.OK {
		rec.successes++
		rec.failures = 0
		if !rec.up && rec.successes >= c.cfg.Rise {
			c.setUp(rec, true, "active", p.Started)
		}
		return
	}
	rec.failures++
	rec.successes = 0
	if rec.up && rec.failures >= c.cfg.Fall {
		c.setUp(rec, false, "active", time.Time{})
	}
}

// setUp records a verdict and tells the balancer, which ramps an instance
// that comes back.
func (c *Checker) setUp(rec *instance, up bool, by string, started time.Time) {
	rec.up = up
	now := c.now()
	if !up {
		rec.downAt = now
	}
	// A returning instance that says when it started is ramped from then
	// plus the rise it takes to be seen up (SPEC section 11): a moment every
	// clb node of one configuration knows alike, so all give it the same
	// load factor, whenever each saw it come back; and about when they do,
	// so the first steps of its ramp are not spent before anyone routes to it.
	// A node may see it up before that moment (its first probe right after
	// the start): it holds the start value until then rather than ramp
	// from its own now, which would step at other moments than the other
	// nodes' for the whole ramp. A moment far ahead is a wrong clock.
	rampFrom := now
	if anchor, ok := c.anchor(started, now); up && ok {
		rampFrom = anchor
	}
	if err := c.bal.SetHealth(rec.cfg.Name, up, rampFrom); err != nil {
		c.log.Warn("health verdict for an unknown instance", zap.String("instance", rec.cfg.Name), zap.Error(err))
		return
	}
	verdict := "down"
	if up {
		verdict = "up"
	}
	c.log.Info("instance health changed", zap.String("instance", rec.cfg.Name), zap.String("health", verdict),
		zap.String("by", by), zap.Int("failures", rec.failures), zap.Int("successes", rec.successes),
		zap.String("error", rec.last.Error))
}

// anchor is the moment a returning instance that started at started is
// ramped from (see setUp); false if it said nothing, or a moment too far
// ahead of now.
func (c *Checker) anchor(started, now time.Time) (time.Time, bool) {
	a := started.Add(time.Duration(c.cfg.Rise) * c.cfg.Interval)
	return a, !started.IsZero() && !a.After(now.Add(maxStartedAhead))
}

// joinRamp puts an instance of the start, first seen answering, on the ramp
// the other nodes run since it started (SetJoinRamps); a ramp over by now
// leaves it at f = 1, and one on a ramp of its own here (an admin action
// from etcd) keeps it (balancer.JoinRamp).
func (c *Checker) joinRamp(rec *instance, started time.Time) {
	now := c.now()
	anchor, ok := c.anchor(started, now)
	if !ok {
		return
	}
	// The balancer logs the transition, if there is one (up to ramping).
	if err := c.bal.JoinRamp(rec.cfg.Name, anchor, now); err != nil {
		c.log.Warn("ramp of an instance that started recently", zap.String("instance", rec.cfg.Name), zap.Error(err))
	}
}

// Run probes every health.interval until ctx ends (with health.active), and
// on each tick retires finished ramps and, with active probes off, gives an
// instance marked down by passive failures traffic again after an interval.
func (c *Checker) Run(ctx context.Context) {
	for {
		c.mu.Lock()
		interval, active := c.cfg.Interval, c.cfg.Active
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		if active {
			c.CheckOnce(ctx)
		} else {
			c.returnPassive()
		}
		c.bal.Tick(c.now())
	}
}

// returnPassive gives instances marked down by passive failures traffic
// again once an interval has passed (SPEC section 8, active checks off).
func (c *Checker) returnPassive() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for _, name := range c.order {
		rec := c.insts[name]
		if !rec.up && now.Sub(rec.downAt) >= c.cfg.Interval {
			rec.failures = 0
			c.setUp(rec, true, "interval", time.Time{})
		}
	}
}

// probe checks an instance on each protocol it speaks: all must answer.
func (c *Checker) probe(ctx context.Context, cfg config.Health, inst config.Instance) Probe {
	p := Probe{At: c.now(), OK: true}
	check := func(protocol string, f func(context.Context) (time.Time, error)) {
		ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		start := time.Now()
		started, err := f(ctx)
		took := time.Since(start)
		if started.After(p.Started) {
			p.Started = started
		}
		c.m.Probe(inst.Name, protocol, err == nil, took)
		if err != nil {
			p.OK = false
			p.Error = fmt.Sprintf("%s: %v", protocol, err)
			return
		}
		p.Latency = max(p.Latency, took)
	}
	if !inst.SIP.IsZero() {
		check("sip", func(ctx context.Context) (time.Time, error) { return probeSIP(ctx, inst.SIP.Endpoint, c.tlsStore()) })
	}
	if !inst.HTTP.IsZero() {
		check("http", func(ctx context.Context) (time.Time, error) {
			return probeHTTP(ctx, inst.HTTP.Endpoint, cfg.HTTPPath, c.tlsStore())
		})
	}
	return p
}

// maxStartedAhead bounds how far ahead of this node's clock an instance's
// started time may anchor its ramp; beyond it, the instance's clock is
// wrong, and it is ramped from when this node saw it back, as one that
// says nothing.
const maxStartedAhead = time.Minute

// StartedField is where an instance says when it started, in its answers
// to the probes.
const StartedField = policy.FieldStarted

// parseStarted reads a StartedField value, Unix seconds with an optional
// fraction; zero when absent or malformed.
func parseStarted(v string) time.Time {
	secs, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || !(secs > 0 && secs < 1e11) {
		return time.Time{}
	}
	return time.UnixMilli(int64(secs*1000 + 0.5))
}

// probeHTTP GETs path: a 2xx or 3xx answer passes.
func probeHTTP(ctx context.Context, e config.Endpoint, path string, store *certs.Store) (time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", e.String()+path, nil)
	if err != nil {
		return time.Time{}, err
	}
	req.Header.Set("User-Agent", "clb-health")
	client := http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil, TLSClientConfig: store.ClientConfig(e.Host, "http/1.1")},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	res, err := client.Do(req)
	if err != nil {
		return time.Time{}, err
	}
	res.Body.Close()
	if res.StatusCode >= 400 {
		return time.Time{}, fmt.Errorf("status %d", res.StatusCode)
	}
	return parseStarted(res.Header.Get(StartedField)), nil
}

// probeSIP sends OPTIONS over the instance's transport: any final response
// passes.
func probeSIP(ctx context.Context, e config.Endpoint, store *certs.Store) (time.Time, error) {
	var conn net.Conn
	var err error
	if e.Transport == "tls" {
		d := tls.Dialer{NetDialer: &net.Dialer{}, Config: store.ClientConfig(e.Host)}
		conn, err = d.DialContext(ctx, "tcp", e.Addr())
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, e.Transport, e.Addr())
	}
	if err != nil {
		return time.Time{}, err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return time.Time{}, err
		}
	}
	host, port, _ := net.SplitHostPort(conn.LocalAddr().String())
	callID := "clb-health-" + gosip.GenerateTagN(16)
	req := gosip.NewRequest(gosip.OPTIONS, gosip.Uri{Scheme: "sip", Host: e.Host, Port: e.Port})
	req.AppendHeader(&gosip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: strings.ToUpper(e.Transport),
		Host: host, Port: mustAtoi(port), Params: gosip.HeaderParams{{K: "branch", V: gosip.GenerateBranch()}, {K: "rport", V: ""}}})
	req.AppendHeader(&gosip.FromHeader{Address: gosip.Uri{Scheme: "sip", User: "clb", Host: host},
		Params: gosip.HeaderParams{{K: "tag", V: gosip.GenerateTagN(10)}}})
	req.AppendHeader(&gosip.ToHeader{Address: gosip.Uri{Scheme: "sip", Host: e.Host, Port: e.Port}})
	cid := gosip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.OPTIONS})
	mf := gosip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetBody(nil)
	if _, err := conn.Write([]byte(req.String())); err != nil {
		return time.Time{}, err
	}
	buf := make([]byte, framing.MaxMessage)
	have := 0
	for {
		n, err := conn.Read(buf[have:])
		if err != nil {
			return time.Time{}, err
		}
		if e.Transport == "udp" {
			if ok, started := final(buf[:n], callID); ok { // one datagram, one message
				return started, nil
			}
			continue
		}
		have += n
		found, started, rest, err := finalOnStream(buf[:have], callID)
		if found || err != nil {
			return started, err
		}
		have = copy(buf, rest)
		if have == len(buf) {
			return time.Time{}, errors.New("response too large")
		}
	}
}

// finalOnStream takes the whole messages off the front of a stream, framed
// as clb's SIP front end frames them, and reports whether one is a final
// response to the probe; rest is what is left for more bytes to complete.
// The probe reads loosely: a head whose Content-Length cannot be told is
// taken as a message without a body, and keep-alives are skipped.
func finalOnStream(b []byte, callID string) (found bool, started time.Time, rest []byte, err error) {
	for {
		kind, n := framing.Next(b)
		switch kind {
		case framing.NeedMore:
			return false, time.Time{}, b, nil
		case framing.TooLarge:
			return false, time.Time{}, nil, errors.New("response too large")
		case framing.Message, framing.BadLength:
			if ok, started := final(b[:n], callID); ok {
				return true, started, nil, nil
			}
		}
		b = b[n:]
	}
}

// final reports whether b holds a final response to the probe, and when
// the instance says it started.
func final(b []byte, callID string) (bool, time.Time) {
	m, err := gosip.ParseMessage(b)
	if err != nil {
		return false, time.Time{}
	}
	res, ok := m.(*gosip.Response)
	if !ok || res.StatusCode < 200 || res.CallID() == nil || res.CallID().Value() != callID {
		return false, time.Time{}
	}
	var started time.Time
	if h := res.GetHeader(StartedField); h != nil {
		started = parseStarted(h.Value())
	}
	return true, started
}

func mustAtoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
