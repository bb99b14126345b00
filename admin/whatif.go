package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"clb/balancer"
	"clb/hashing"
)

// WhatIf is the answer of GET /api/v1/whatif: what a change of the instance
// list would do to routing now, changing nothing. Shares are of all keys.
type WhatIf struct {
	// Version is the routing table's the what-if was computed on.
	Version uint64    `json:"version"`
	Time    time.Time `json:"time"`
	Remove  []string  `json:"remove"`
	Add     []Added   `json:"add"`
	Effect
	// Shares are each instance's share of keys now and after, by name.
	Shares []ShareChange `json:"shares"`
	// TookMS is how long it took to compute (an answer kept from an earlier
	// call on the same table says how long it took then).
	TookMS float64 `json:"took_ms"`
}

// Added is an instance a what-if adds.
type Added struct {
	Name   string `json:"name"`
	Weight int    `json:"weight"`
}

// Effect is what one change would do.
type Effect struct {
	// Keys is how many keys were compared: one in every hashing slot.
	Keys int `json:"keys"`
	// Moved is the share of keys whose owner would change.
	Moved float64 `json:"moved"`
	// ToReplica is the share that would move to their replica partner (every
	// moved key, for a removal).
	ToReplica float64 `json:"to_replica"`
	// ToNewPartner is the share that would move to an instance whose replica
	// partner for them is their old owner (every moved key, for an
	// addition).
	ToNewPartner float64 `json:"to_new_partner"`
	// Unsafe is the share that would move to an instance that finds their
	// state neither on itself nor on its replica partner.
	Unsafe float64 `json:"unsafe"`
	// ReplicaChanged is the share that would stay but change replica partner.
	ReplicaChanged float64 `json:"replica_changed"`
	// Moves is the matrix of moved keys, by old and new owner, largest first
	// ("" for none).
	Moves []Move `json:"moves"`
}

// Move is one cell of a what-if's matrix.
type Move struct {
	From  string  `json:"from"`
	To    string  `json:"to"`
	Share float64 `json:"share"`
}

// ShareChange is an instance's share of keys now and after a change.
type ShareChange struct {
	Name   string  `json:"name"`
	Before float64 `json:"before"`
	After  float64 `json:"after"`
}

// Drains is the answer of GET /api/v1/whatif/drains: for every instance in
// configuration order, what draining it to its end would do now.
type Drains struct {
	Version uint64      `json:"version"`
	Time    time.Time   `json:"time"`
	Drains  []DrainInfo `json:"drains"`
	TookMS  float64     `json:"took_ms"`
}

// DrainInfo is the what-if of draining one instance.
type DrainInfo struct {
	Name string `json:"name"`
	Effect
}

func effectOf(e balancer.Effect) Effect {
	out := Effect{Keys: e.Keys, Moved: e.Moved, ToReplica: e.ToReplica, ToNewPartner: e.ToNewPartner,
		Unsafe: e.Unsafe, ReplicaChanged: e.ReplicaChanged, Moves: make([]Move, len(e.Flows))}
	for k, f := range e.Flows {
		out.Moves[k] = Move{From: f.From, To: f.To, Share: f.Share}
	}
	return out
}

// whatIfs runs what-ifs one at a time, off the routing path (a what-if
// that adds an instance builds a hashing table: about a second at N =
// 1000), and keeps the last answers for the table they were computed on.
type whatIfs struct {
	running chan struct{} // holds a token while a what-if runs
	// queue is how long a call waits for the one running before 429.
	queue time.Duration

	mu      sync.Mutex
	version uint64
	kept    map[string]keptAnswer // by query, for version
}

type keptAnswer struct {
	answer any
	// until is when a ramp steps and changes the answer (zero: never).
	until time.Time
}

// maxKept bounds the answers kept for one table.
const maxKept = 16

func newWhatIfs() *whatIfs {
	return &whatIfs{running: make(chan struct{}, 1), queue: 10 * time.Second, kept: map[string]keptAnswer{}}
}

var errBusy = errors.New("another what-if is running: try again")

// answer is the kept answer to query on table t at now, or compute's,
// computed when no other what-if runs.
func (w *whatIfs) answer(ctx context.Context, t *balancer.Table, now time.Time, query string, compute func() (any, error)) (any, error) {
	if a, ok := w.lookup(t.Version(), query, now); ok {
		return a, nil
	}
	select {
	case w.running <- struct{}{}:
	default:
		timer := time.NewTimer(w.queue)
		defer timer.Stop()
		select {
		case w.running <- struct{}{}:
		case <-timer.C:
			return nil, errBusy
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer func() { <-w.running }()
	if a, ok := w.lookup(t.Version(), query, now); ok { // computed while this one waited
		return a, nil
	}
	a, err := compute()
	if err != nil {
		return nil, err
	}
	var until time.Time
	for _, st := range t.Status(now) {
		if !st.NextChange.IsZero() && (until.IsZero() || st.NextChange.Before(until)) {
			until = st.NextChange
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.version != t.Version() || len(w.kept) >= maxKept {
		w.version, w.kept = t.Version(), map[string]keptAnswer{}
	}
	w.kept[query] = keptAnswer{answer: a, until: until}
	return a, nil
}

func (w *whatIfs) lookup(version uint64, query string, now time.Time) (any, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	k, ok := w.kept[query]
	if !ok || w.version != version || !k.until.IsZero() && !now.Before(k.until) {
		return nil, false
	}
	return k.answer, true
}

// parseChange reads remove=NAME and add=NAME:WEIGHT, each as often as wanted.
func parseChange(r *http.Request) (balancer.Change, error) {
	q := r.URL.Query()
	var c balancer.Change
	for _, name := range q["remove"] {
		if name == "" {
			return c, errors.New("remove: want an instance name")
		}
		c.Remove = append(c.Remove, name)
	}
	for _, a := range q["add"] {
		name, w, ok := strings.Cut(a, ":")
		weight, err := strconv.Atoi(w)
		if !ok || name == "" || err != nil || weight < 0 {
			return c, fmt.Errorf("add: %q: want NAME:WEIGHT, a weight from 0 up", a)
		}
		c.Add = append(c.Add, hashing.Instance{Name: name, Weight: weight})
	}
	if len(c.Remove) == 0 && len(c.Add) == 0 {
		return c, errors.New("want remove=NAME or add=NAME:WEIGHT (several allowed)")
	}
	return c, nil
}

// whatIf is GET /api/v1/whatif?remove=NAME&add=NAME:WEIGHT.
func (s *Server) whatIf(w http.ResponseWriter, r *http.Request) {
	c, err := parseChange(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	t, now := s.o.Balancer.Table(), s.o.Now()
	query := canonical(c)
	a, err := s.whatifs.answer(r.Context(), t, now, query, func() (any, error) {
		start := time.Now()
		e, err := t.WhatIf(c, now)
		if err != nil {
			return nil, err
		}
		out := WhatIf{Version: t.Version(), Time: now, Remove: c.Remove, Add: []Added{}, Effect: effectOf(e),
			Shares: make([]ShareChange, len(e.Shares))}
		if out.Remove == nil {
			out.Remove = []string{}
		}
		for _, in := range c.Add {
			out.Add = append(out.Add, Added{Name: in.Name, Weight: in.Weight})
		}
		for k, sh := range e.Shares {
			out.Shares[k] = ShareChange{Name: sh.Name, Before: sh.Before, After: sh.After}
		}
		out.TookMS = float64(time.Since(start)) / float64(time.Millisecond)
		s.log.Info("what-if", zap.String("query", query), zap.Float64("moved", e.Moved),
			zap.Duration("took", time.Since(start)))
		return out, nil
	})
	s.writeWhatIf(w, a, err)
}

// whatIfDrains is GET /api/v1/whatif/drains.
func (s *Server) whatIfDrains(w http.ResponseWriter, r *http.Request) {
	t, now := s.o.Balancer.Table(), s.o.Now()
	a, err := s.whatifs.answer(r.Context(), t, now, "drains", func() (any, error) {
		start := time.Now()
		out := Drains{Version: t.Version(), Time: now, Drains: []DrainInfo{}}
		for _, d := range t.Drains(now) {
			out.Drains = append(out.Drains, DrainInfo{Name: d.Name, Effect: effectOf(d.Effect)})
		}
		out.TookMS = float64(time.Since(start)) / float64(time.Millisecond)
		return out, nil
	})
	s.writeWhatIf(w, a, err)
}

func (s *Server) writeWhatIf(w http.ResponseWriter, a any, err error) {
	switch {
	case errors.Is(err, errBusy):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, err.Error())
	case errors.Is(err, balancer.ErrUnknownInstance):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, balancer.ErrBadChange):
		writeError(w, http.StatusBadRequest, err.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, a)
	}
}

// canonical is c as a cache key: the same change however the query orders it.
func canonical(c balancer.Change) string {
	rm := slices.Sorted(slices.Values(c.Remove))
	var add []string
	for _, in := range c.Add {
		add = append(add, in.Name+":"+strconv.Itoa(in.Weight))
	}
	slices.Sort(add)
	return "remove=" + strings.Join(rm, ",") + "&add=" + strings.Join(add, ",")
}
