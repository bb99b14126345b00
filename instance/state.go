package instance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// State is everything the instance keeps for one BEKey: the HTTP session's
// counter and task list and the key's SIP dialogs. It travels as JSON
// between partners.
type State struct {
	Key string `json:"key"`
	// Version rises by one per change; a copy with a higher version wins.
	Version uint64             `json:"version"`
	Counter int64              `json:"counter"`
	Tasks   []string           `json:"tasks"`
	Dialogs map[string]*Dialog `json:"dialogs"` // by Call-ID
}

// Dialog is one SIP dialog of a key, as its UAS keeps it.
type Dialog struct {
	CallID     string `json:"call_id"`
	LocalTag   string `json:"local_tag"`
	RemoteTag  string `json:"remote_tag"`
	RemoteCSeq uint32 `json:"remote_cseq"`
	// State is confirmed (the 200 was sent) or terminated (BYE answered).
	State     string    `json:"state"`
	ReInvites int       `json:"reinvites"`
	Ended     time.Time `json:"ended,omitzero"`
}

func (s *State) clone() *State {
	c := *s
	c.Tasks = append([]string(nil), s.Tasks...)
	c.Dialogs = make(map[string]*Dialog, len(s.Dialogs))
	for id, d := range s.Dialogs {
		dc := *d
		c.Dialogs[id] = &dc
	}
	return &c
}

// role is how an instance holds a key.
type role uint8

const (
	owner   role = iota // clb sends the key here
	replica             // a partner replicates the key here
)

func (r role) String() string {
	if r == owner {
		return "owner"
	}
	return "replica"
}

// entry is one key's state and role; its mutex serialises the key's
// requests.
type entry struct {
	mu         sync.Mutex
	state      *State // nil: not held
	role       role
	replicated string // the partner that holds the replica
}

// keepTerminated is how long an ended dialog is kept, to answer a BYE sent
// again (64×T1, RFC 3261 Timer J).
const keepTerminated = 32 * time.Second

// maxKeys bounds the keys held, owned and replicas: a sample instance must
// not grow without end either.
const maxKeys = 1 << 20

var errFull = errors.New("too many keys held")

// store holds the keys, and reaches the partners.
type store struct {
	name   string
	log    *zap.Logger
	client *http.Client
	peers  *peers

	mu   sync.Mutex
	keys map[string]*entry

	drops sync.WaitGroup // drops sent after an answer, waited for at shutdown
}

func newStore(name string, peers *peers, log *zap.Logger) *store {
	return &store{
		name:   name,
		log:    log,
		client: &http.Client{Timeout: time.Second},
		peers:  peers,
		keys:   map[string]*entry{},
	}
}

// lock returns key's entry locked, creating it if create is set (nil if
// not). An entry removed from the map while a caller waited for it is not
// returned: the caller tries again with the current one.
func (s *store) lock(key string, create bool) (*entry, error) {
	for {
		s.mu.Lock()
		e := s.keys[key]
		if e == nil {
			if !create {
				s.mu.Unlock()
				return nil, nil
			}
			if len(s.keys) >= maxKeys {
				s.mu.Unlock()
				return nil, errFull
			}
			e = &entry{}
			s.keys[key] = e
		}
		s.mu.Unlock()
		e.mu.Lock()
		s.mu.Lock()
		current := s.keys[key] == e
		s.mu.Unlock()
		if current {
			return e, nil
		}
		e.mu.Unlock()
	}
}

// unlock unlocks e, removing it from the map if it holds nothing.
func (s *store) unlock(key string, e *entry) {
	if e.state == nil {
		s.mu.Lock()
		if s.keys[key] == e {
			delete(s.keys, key)
		}
		s.mu.Unlock()
	}
	e.mu.Unlock()
}

// headers are what clb told the instance of a request's key.
type headers struct {
	key, replica, previous string
}

// session is a key taken for one request: its state, locked, as owner.
type session struct {
	s     *store
	e     *entry
	h     headers
	state *State
	// from is the instance the key was taken from (fetched from it, or the
	// previous owner when a replica was held): "" if owned already or new.
	from string
}

// acquire locks key's entry for a request clb sent here, taking the key
// over if the instance held only a replica, or fetching the state from the
// replica partner or the previous owner if it held nothing; if no one held
// it, its state is new and empty.
func (s *store) acquire(ctx context.Context, h headers) (*session, error) {
	e, err := s.lock(h.key, true)
	if err != nil {
		return nil, err
	}
	sess := &session{s: s, e: e, h: h}
	if e.state != nil {
		if e.role == replica {
			// Taking the key over: the previous owner's copy is stale
			// from now on.
			s.log.Debug("taking a key over from its replica", zap.String("key", h.key))
			sess.from = h.previous
		}
		e.role = owner
		sess.state = e.state.clone()
		return sess, nil
	}
	var replicaErr error
	for _, from := range []string{h.replica, h.previous} {
		if from == "" || from == s.name {
			continue
		}
		st, err := s.fetch(ctx, from, h.key)
		if err != nil {
			s.log.Warn("fetching a key", zap.String("key", h.key), zap.String("from", from), zap.Error(err))
			if from == h.replica {
				replicaErr = err
			}
			continue
		}
		if st != nil {
			sess.state, sess.from = st, from
			e.role = owner
			return sess, nil
		}
	}
	if replicaErr != nil {
		// The replica partner, which clb names because it is live, may
		// hold the key: starting it anew would lose what it holds. The
		// request is refused (503) and the client tries again. (The
		// previous owner is another matter: it is often dead.)
		s.unlock(h.key, e)
		return nil, fmt.Errorf("%w %s: %v", errReplicaUnreachable, h.replica, replicaErr)
	}
	e.role = owner
	sess.state = &State{Key: h.key, Dialogs: map[string]*Dialog{}}
	return sess, nil
}

// commit makes the session's state the key's state, replicating it to the
// replica partner first when changed is set (or when the key was just taken
// over), so that what the client is told is held twice.
func (ss *session) commit(ctx context.Context, changed bool) {
	e, st := ss.e, ss.state
	taken := ss.from != "" || e.state == nil || e.replicated != ss.h.replica
	if changed {
		st.Version++
	}
	e.state = st
	if changed || taken {
		ss.s.replicate(ctx, e, ss.h, ss.from)
	}
	ss.s.unlock(ss.h.key, e)
}

// release unlocks a session that changed nothing; state fetched from a
// partner is kept (and replicated, as a take-over).
func (ss *session) release(ctx context.Context) {
	if ss.from != "" {
		ss.commit(ctx, false)
		return
	}
	ss.s.unlock(ss.h.key, ss.e)
}

// replicate sends e's state to the replica partner; a partner that held the
// replica before, and the instance the state was fetched from, are told to
// drop their copies (unless one of them is the partner).
func (s *store) replicate(ctx context.Context, e *entry, h headers, from string) {
	old := e.replicated
	if h.replica != "" && h.replica != s.name {
		if err := s.put(ctx, h.replica, e.state); err != nil {
			s.log.Warn("replicating a key", zap.String("key", h.key), zap.String("to", h.replica), zap.Error(err))
			e.replicated = ""
		} else {
			e.replicated = h.replica
		}
	}
	for _, stale := range []string{old, from} {
		if stale != "" && stale != h.replica && stale != s.name {
			s.drops.Go(func() { s.drop(stale, h.key) })
		}
	}
}

func (s *store) stateURL(ctx context.Context, peer, key string) (string, error) {
	base, err := s.peers.httpAddr(ctx, peer)
	if err != nil {
		return "", err
	}
	return base + "/_clb/state/" + url.PathEscape(key), nil
}

// fetch gets key's state from peer; nil if peer does not hold it.
func (s *store) fetch(ctx context.Context, peer, key string) (*State, error) {
	u, err := s.stateURL(ctx, peer, key)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	res, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusNotFound:
		return nil, nil
	case http.StatusOK:
		var st State
		if err := json.NewDecoder(io.LimitReader(res.Body, maxState)).Decode(&st); err != nil {
			return nil, err
		}
		if st.Dialogs == nil {
			st.Dialogs = map[string]*Dialog{}
		}
		return &st, nil
	}
	return nil, fmt.Errorf("GET %s: %s", u, res.Status)
}

// maxState bounds a state on the wire.
const maxState = 1 << 20

func (s *store) put(ctx context.Context, peer string, st *State) error {
	u, err := s.stateURL(ctx, peer, st.Key)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(st)
	req, _ := http.NewRequestWithContext(ctx, "PUT", u, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-From", s.name)
	res, err := s.client.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		return fmt.Errorf("PUT %s: %s", u, res.Status)
	}
	return nil
}

func (s *store) drop(peer, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	u, err := s.stateURL(ctx, peer, key)
	if err != nil {
		return
	}
	req, _ := http.NewRequestWithContext(ctx, "DELETE", u, nil)
	if res, err := s.client.Do(req); err == nil {
		res.Body.Close()
	}
}

// receive stores a replica the partner named from sent, unless a newer copy
// is held. An instance that owned the key until now (the key moved to from)
// tells its own partner to drop the copy it no longer needs.
func (s *store) receive(st *State, from string) error {
	e, err := s.lock(st.Key, true)
	if err != nil {
		return err
	}
	defer s.unlock(st.Key, e)
	if e.state == nil || st.Version >= e.state.Version {
		if st.Dialogs == nil {
			st.Dialogs = map[string]*Dialog{}
		}
		if old := e.replicated; e.role == owner && old != "" && old != from {
			s.drops.Go(func() { s.drop(old, st.Key) })
		}
		e.state, e.role, e.replicated = st, replica, ""
	}
	return nil
}

// get is the state held for key, for a partner that fetches it.
func (s *store) get(key string) *State {
	e, _ := s.lock(key, false)
	if e == nil {
		return nil
	}
	defer s.unlock(key, e)
	if e.state == nil {
		return nil
	}
	return e.state.clone()
}

// forget drops a copy this instance should no longer hold.
func (s *store) forget(key string) {
	e, _ := s.lock(key, false)
	if e == nil {
		return
	}
	e.state, e.replicated = nil, ""
	s.unlock(key, e)
}

// Held is one key in the state dump.
type Held struct {
	Key        string `json:"key"`
	Role       string `json:"role"`
	Version    uint64 `json:"version"`
	Counter    int64  `json:"counter"`
	Tasks      int    `json:"tasks"`
	Dialogs    int    `json:"dialogs"`
	Replicated string `json:"replicated_to,omitempty"`
}

// dump lists the keys held, by key.
func (s *store) dump() []Held {
	s.mu.Lock()
	entries := make(map[string]*entry, len(s.keys))
	for k, e := range s.keys {
		entries[k] = e
	}
	s.mu.Unlock()
	out := []Held{}
	for k, e := range entries {
		e.mu.Lock()
		if e.state != nil {
			out = append(out, Held{Key: k, Role: e.role.String(), Version: e.state.Version, Counter: e.state.Counter,
				Tasks: len(e.state.Tasks), Dialogs: len(e.state.Dialogs), Replicated: e.replicated})
		}
		e.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// errReplicaUnreachable is acquire's error when the replica partner
// could not be asked for a key the instance does not hold.
var errReplicaUnreachable = errors.New("cannot reach the replica partner")

// peers finds the partners' HTTP addresses in clb's GET /api/v1/instances,
// asking each clb node it knows in turn until one answers.
type peers struct {
	client *http.Client
	mu     sync.Mutex
	admins []string // base URLs of clb nodes' admin APIs
	token  string
	addrs  map[string]string
	asked  time.Time
}

// setAdmin sets the admin APIs, base URLs separated by commas (one per
// clb node: any of them lists the instances).
func (p *peers) setAdmin(bases, token string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.admins = p.admins[:0]
	for _, b := range strings.Split(bases, ",") {
		if b = strings.TrimRight(strings.TrimSpace(b), "/"); b != "" {
			p.admins = append(p.admins, b)
		}
	}
	p.token = token
}

// httpAddr is the base URL of the instance named name, asking clb again
// when it is not known (at most every 200 ms).
func (p *peers) httpAddr(ctx context.Context, name string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.addrs[name]; ok {
		return a, nil
	}
	if len(p.admins) == 0 {
		return "", errors.New("clb's admin API is not known yet")
	}
	if time.Since(p.asked) >= 200*time.Millisecond {
		p.asked = time.Now()
		var errs []error
		for _, admin := range p.admins {
			err := p.refresh(ctx, admin)
			if err == nil {
				errs = nil
				break
			}
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return "", errors.Join(errs...)
		}
	}
	if a, ok := p.addrs[name]; ok {
		return a, nil
	}
	return "", fmt.Errorf("instance %q: clb does not list it with an HTTP address", name)
}

func (p *peers) refresh(ctx context.Context, admin string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", admin+"/api/v1/instances", nil)
	if err != nil {
		return err
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	res, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /api/v1/instances: %s", res.Status)
	}
	var list struct {
		Instances []struct {
			Name string `json:"name"`
			HTTP string `json:"http"`
		} `json:"instances"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&list); err != nil {
		return err
	}
	addrs := map[string]string{}
	for _, i := range list.Instances {
		if i.HTTP != "" {
			addrs[i.Name] = i.HTTP
		}
	}
	p.addrs = addrs
	return nil
}
