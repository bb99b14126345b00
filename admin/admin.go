// Package admin owns clb's admin listener: the JSON API of SPEC section 9
// (status, instances, route — one key, or many in one POST — enable/disable/
// drain, reload, what-if), the Prometheus metrics and the status page.
//
// Concurrency: a Server is safe for concurrent use. Handlers read the
// balancer's current Table, the health Checker and the metrics, each of them
// safe for concurrent use; writes go through the Balancer's methods and the
// Reload function, which serialise themselves. What-ifs run one at a time
// (the others wait, then get 429).
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"clb/balancer"
	"clb/health"
	"clb/membership"
	"clb/metrics"
)

// Options configure a Server.
type Options struct {
	Balancer *balancer.Balancer
	// Health, if set, supplies each instance's health record.
	Health *health.Checker
	// Metrics, if set, supplies request and session counts and GET /metrics.
	Metrics *metrics.Metrics
	// Token, if not empty, is required as "Authorization: Bearer TOKEN" on
	// every API call and on /metrics.
	Token string
	// Reload, if set, reloads the configuration file; its error is the
	// reason a file was refused.
	Reload func() (Reloaded, error)
	// ClusterWeight, if set, carries POST /api/v1/clusters/{name}/weight:
	// an admin path shared by several clb nodes (etcd's
	// PREFIX/clusters/NAME, SPEC section 11) sets it so that every node
	// applies the change. nil: the balancer's SetClusterWeight, this node
	// alone. Its errors are the balancer's (ErrUnknownCluster, ErrBadWeight).
	ClusterWeight func(name string, weight int) error
	Logger        *zap.Logger
	// Shared, if set, is the state clb nodes share: enable, disable and
	// drain go through it, and the status says how it is.
	Shared *Shared
	// Discovery, if set, is the state of the SRV look-ups (discovery.sip,
	// discovery.http), for the status.
	Discovery func() []membership.SRVStatus
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Reloaded is what a successful reload changed.
type Reloaded struct {
	Instances int      `json:"instances"`
	Added     []string `json:"added"`
	Removed   []string `json:"removed"`
}

// Server is the admin listener.
type Server struct {
	o     Options
	log   *zap.Logger
	ln    net.Listener
	srv   *http.Server
	token atomic.Pointer[string]
	// waiting, if set, is called when a long poll starts to wait: a test
	// hook, set before Serve.
	waiting func()
	whatifs *whatIfs
}

// maxWait bounds a long poll of the status.
const maxWait = 60 * time.Second

// NewServer listens on addr (host:port; port 0 picks one).
func NewServer(addr string, o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ClusterWeight == nil && o.Balancer != nil {
		o.ClusterWeight = o.Balancer.SetClusterWeight
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	s := &Server{o: o, log: o.Logger, ln: ln, whatifs: newWhatIfs()}
	s.SetToken(o.Token)
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      maxWait + 10*time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          zap.NewStdLog(o.Logger),
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// SetToken replaces the bearer token (on reload).
func (s *Server) SetToken(token string) { s.token.Store(&token) }

// Serve answers until ctx ends, then lets calls in flight finish for up to
// grace.
func (s *Server) Serve(ctx context.Context, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.srv.Close() // long polls past the grace period
	}
	<-errc
	return nil
}

// Handler is the admin API, the metrics and the status page.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.page)
	mux.HandleFunc("GET /api/v1/status", s.auth(s.status))
	mux.HandleFunc("GET /api/v1/instances", s.auth(s.instances))
	mux.HandleFunc("GET /api/v1/route", s.auth(s.route))
	mux.HandleFunc("POST /api/v1/route", s.auth(s.routeBatch))
	mux.HandleFunc("GET /api/v1/whatif", s.auth(s.whatIf))
	mux.HandleFunc("GET /api/v1/whatif/drains", s.auth(s.whatIfDrains))
	mux.HandleFunc("POST /api/v1/instances/{name}/{action}", s.auth(s.change(s.act)))
	mux.HandleFunc("POST /api/v1/reload", s.auth(s.change(s.reload)))
	mux.HandleFunc("POST /api/v1/clusters/{name}/weight", s.auth(s.change(s.clusterWeight)))
	if s.o.Metrics != nil {
		mux.Handle("GET /metrics", s.auth(s.o.Metrics.Handler().ServeHTTP))
	}
	return mux
}

// auth requires the bearer token, when there is one. The status page itself
// carries no data and is served to anyone: its script sends the token it is
// given in the URL fragment (never sent to the server by the browser).
//
// Without a token the API is on loopback, where a web page in the
// operator's browser can reach it: a DNS rebinding page then speaks to it
// under its own name, so the Host must be an IP address or localhost.
func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok := *s.token.Load(); tok != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			// Compared as hashes, so that the time taken tells nothing of
			// the token's length either.
			gotSum, tokSum := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(tok))
			if !ok || subtle.ConstantTimeCompare(gotSum[:], tokSum[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="clb"`)
				writeError(w, http.StatusUnauthorized, "a bearer token is required")
				return
			}
		} else if !localHost(r.Host) {
			writeError(w, http.StatusForbidden, "Host "+strconv.Quote(r.Host)+": the admin API without a token answers only to an IP address or localhost")
			return
		}
		h(w, r)
	}
}

// AdminHeader marks a state-changing call as sent by a program: a web page
// cannot send a custom field to another origin without a CORS preflight,
// which clb never grants, so a cross-site form or fetch cannot drive the API.
const AdminHeader = "X-CLB-Admin"

// change guards a state-changing call against the operator's browser: it
// must carry AdminHeader or a JSON body (neither can come from a plain form),
// and an Origin, when a browser sends one, must be the admin listener's own.
func (s *Server) change(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
		if r.Header.Get(AdminHeader) == "" && !strings.EqualFold(strings.TrimSpace(ct), "application/json") {
			writeError(w, http.StatusForbidden, "a state-changing call needs the header "+AdminHeader+": 1 (or a JSON body)")
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
			writeError(w, http.StatusForbidden, "Origin "+strconv.Quote(o)+" is not the admin listener's")
			return
		}
		h(w, r)
	}
}

// localHost reports a Host that is an IP literal or localhost, with an
// optional port: a name no rebinding DNS answer can stand behind.
func localHost(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	_, err := netip.ParseAddr(h)
	return err == nil
}

// sameOrigin reports whether origin (scheme://host[:port]) names host.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, host)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}

// status is GET /api/v1/status. With wait=DURATION (and version=V, the
// version of the last answer) it is a long poll: it answers when the routing
// table is no longer at version V, when a load factor steps, or after
// DURATION (at most a minute), whichever comes first.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if ws := q.Get("wait"); ws != "" {
		wait, err := time.ParseDuration(ws)
		if err != nil || wait < 0 {
			writeError(w, http.StatusBadRequest, "wait: want a duration such as 10s")
			return
		}
		version, err := strconv.ParseUint(q.Get("version"), 10, 64)
		if q.Get("version") != "" && err != nil {
			writeError(w, http.StatusBadRequest, "version: want the version of a previous answer")
			return
		}
		s.waitChange(r.Context(), min(wait, maxWait), version)
	}
	writeJSON(w, http.StatusOK, s.snapshot())
}

// waitChange returns when the table is past version, a ramp steps, d passes
// or ctx ends.
func (s *Server) waitChange(ctx context.Context, d time.Duration, version uint64) {
	changed := s.o.Balancer.Changed()
	t := s.o.Balancer.Table()
	if t.Version() != version {
		return
	}
	now := s.o.Now()
	for _, st := range t.Status(now) {
		if !st.NextChange.IsZero() && st.NextChange.Sub(now) < d {
			d = st.NextChange.Sub(now)
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	if s.waiting != nil {
		s.waiting()
	}
	select {
	case <-changed:
	case <-timer.C:
	case <-ctx.Done():
	}
}

// instances is GET /api/v1/instances: what an instance needs to find its
// replica partner.
func (s *Server) instances(w http.ResponseWriter, r *http.Request) {
	var out struct {
		Instances []InstanceAddrs `json:"instances"`
	}
	out.Instances = []InstanceAddrs{}
	for _, st := range s.o.Balancer.Table().Status(s.o.Now()) {
		out.Instances = append(out.Instances, addrs(st))
	}
	writeJSON(w, http.StatusOK, out)
}

// route is GET /api/v1/route?key=K[&n=N][&protocol=sip|http].
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !q.Has("key") {
		writeError(w, http.StatusBadRequest, "key: missing")
		return
	}
	key := q.Get("key")
	n := 4
	if ns := q.Get("n"); ns != "" {
		v, err := strconv.Atoi(ns)
		if err != nil || v < 1 {
			writeError(w, http.StatusBadRequest, "n: want a positive number")
			return
		}
		n = v
	}
	p, ok := protocol(w, q)
	if !ok {
		return
	}
	t := s.o.Balancer.Table()
	d := t.RouteFor(p, key, q.Get("last"), s.o.Now())
	out := Route{Key: key, Fallback: d.Fallback, Preference: t.PreferenceList([]string{}, key, n)}
	if d.Owner != nil {
		out.Owner, out.Cluster = d.Owner.Name, d.Owner.ClusterName()
	}
	if d.Replica != nil {
		out.Replica = d.Replica.Name
	}
	writeJSON(w, http.StatusOK, out)
}

// act is POST /api/v1/instances/{name}/enable|disable|drain.
func (s *Server) act(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), r.PathValue("action")
	var f func(string, time.Time) error
	switch action {
	case "enable":
		f = s.o.Balancer.Enable
	case "disable":
		f = s.o.Balancer.Disable
	case "drain":
		f = s.o.Balancer.Drain
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("action %q: want enable, disable or drain", action))
		return
	}
	var err error
	if s.o.Shared != nil && s.o.Shared.Act != nil {
		err = s.o.Shared.Act(name, action, s.o.Now())
	} else {
		err = f(name, s.o.Now())
	}
	if err != nil {
		status := http.StatusConflict
		switch {
		case errors.Is(err, balancer.ErrUnknownInstance):
			status = http.StatusNotFound
		case errors.Is(err, ErrUnavailable):
			status = http.StatusServiceUnavailable
		}
		writeError(w, status, err.Error())
		return
	}
	s.log.Info("admin action", zap.String("instance", name), zap.String("action", action),
		zap.String("from", r.RemoteAddr))
	for _, st := range s.snapshot().Instances {
		if st.Name == name {
			writeJSON(w, http.StatusOK, st)
			return
		}
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("instance %q is gone", name))
}

// clusterWeight is POST /api/v1/clusters/{name}/weight?value=W: the
// cluster's share of new sessions from now on (SPEC section 13). It answers
// the cluster's status.
func (s *Server) clusterWeight(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	weight, err := strconv.Atoi(r.URL.Query().Get("value"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "value: want a whole number, the weight (0 closes the cluster to new sessions)")
		return
	}
	if err := s.o.ClusterWeight(name, weight); err != nil {
		status := http.StatusBadRequest
		switch {
		case errors.Is(err, balancer.ErrUnknownCluster):
			status = http.StatusNotFound
		case errors.Is(err, ErrUnavailable):
			status = http.StatusServiceUnavailable
		}
		writeError(w, status, err.Error())
		return
	}
	s.log.Info("cluster weight", zap.String("cluster", name), zap.Int("weight", weight), zap.String("from", r.RemoteAddr))
	for _, c := range s.snapshot().Clusters {
		if c.Name == name {
			writeJSON(w, http.StatusOK, c)
			return
		}
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("cluster %q is gone", name))
}

// reload is POST /api/v1/reload.
func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	if s.o.Reload == nil {
		writeError(w, http.StatusNotImplemented, "this clb has no configuration file to reload")
		return
	}
	res, err := s.o.Reload()
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}
