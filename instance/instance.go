// Package instance is the sample back-end of SPEC section 10: an application
// server instance that behaves like a clustered SIP servlet container, for
// `clb demo`, the end-to-end tests, and instance authors to read.
//
// It keeps state per BEKey (an HTTP session's counter and task list, the
// key's SIP dialogs), replicates every change to the instance clb names in
// X-CLB-Replica before answering, fetches a key it does not hold from
// X-CLB-Replica or X-CLB-Previous before answering, and tells instances that
// should no longer hold a copy to drop it. Partners' addresses come from
// clb's GET /api/v1/instances; partners talk over the instances' HTTP
// addresses (/_clb/state/KEY), which every sample instance therefore has.
//
// Concurrency: an Instance serves SIP and HTTP from many goroutines; each
// key's requests are serialised by the key's lock, held across the
// replication of its change.
package instance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"clb/policy"

	"go.uber.org/zap"
)

// Options configure an Instance.
type Options struct {
	Name string
	// SIP is the UDP address to listen on (host:port, port 0 picks one);
	// empty for no SIP.
	SIP string
	// HTTP is the address of the app and of the partners' endpoints.
	HTTP string
	// Admin is the base URL of clb's admin API (http://host:port), or
	// several, one per clb node, separated by commas (asked in turn); it
	// may be set later with SetAdmin.
	Admin, Token string
	// Ring is how long an INVITE rings before its 200.
	Ring   time.Duration
	Logger *zap.Logger
}

// Instance is a running sample instance.
type Instance struct {
	name      string
	started   string    // Unix seconds, told to clb's probes (policy.FieldStarted)
	startedAt time.Time // the same, to the millisecond
	log       *zap.Logger
	store     *store
	peers     *peers
	web       *http.Server
	webLn     net.Listener
	uas       *uas // nil without SIP
}

// New binds the instance's addresses.
func New(o Options) (*Instance, error) {
	if o.Name == "" || o.HTTP == "" {
		return nil, errors.New("instance: a name and an HTTP address are required")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	p := &peers{client: &http.Client{Timeout: 2 * time.Second}}
	p.setAdmin(o.Admin, o.Token)
	now := time.Now().Round(time.Millisecond)
	in := &Instance{name: o.Name, log: o.Logger, peers: p, store: newStore(o.Name, p, o.Logger),
		started: strconv.FormatFloat(float64(now.UnixMilli())/1000, 'f', 3, 64), startedAt: now}
	ln, err := net.Listen("tcp", o.HTTP)
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", o.Name, err)
	}
	in.webLn = ln
	in.web = &http.Server{
		Handler:           in.tellStarted(in.handler()),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          zap.NewStdLog(o.Logger),
	}
	if o.SIP != "" {
		addr, err := net.ResolveUDPAddr("udp", o.SIP)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("instance %s: %w", o.Name, err)
		}
		conn, err := net.ListenUDP("udp", addr)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("instance %s: %w", o.Name, err)
		}
		in.uas = newUAS(in, conn, o.Ring)
	}
	return in, nil
}

// Name is the instance's name.
func (in *Instance) Name() string { return in.name }

// SIPAddr is the SIP address as clb's configuration writes it
// (udp://host:port); empty without SIP.
func (in *Instance) SIPAddr() string {
	if in.uas == nil {
		return ""
	}
	return "udp://" + in.uas.conn.LocalAddr().String()
}

// HTTPAddr is the HTTP address as clb's configuration writes it.
func (in *Instance) HTTPAddr() string { return "http://" + in.webLn.Addr().String() }

// SetAdmin sets clb's admin API, where partners are looked up: a base
// URL, or several separated by commas (one per clb node, asked in turn).
func (in *Instance) SetAdmin(base, token string) { in.peers.setAdmin(base, token) }

// Serve answers until ctx ends, then closes its sockets and returns when
// the requests being handled are done.
func (in *Instance) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	if in.uas != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.uas.serve(ctx, &wg)
		}()
	}
	errc := make(chan error, 1)
	go func() { errc <- in.web.Serve(in.webLn) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	if in.uas != nil {
		in.uas.conn.Close()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = in.web.Shutdown(sctx)
	<-errc
	wg.Wait()
	in.store.drops.Wait()
	return nil
}

// Calls are the Call-IDs of the calls the instance answered that neither
// side has ended: those POST /_clb/hangup can end.
func (in *Instance) Calls() []string {
	if in.uas == nil {
		return nil
	}
	return in.uas.calls()
}

// Dump is the keys the instance holds, as GET /_clb/dump lists them.
func (in *Instance) Dump() []Held { return in.store.dump() }

// tellStarted says on every HTTP answer when the instance started, so that
// every clb node ramps it up from the same moment (SPEC section 11).
func (in *Instance) tellStarted(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(policy.FieldStarted, in.started)
		h.ServeHTTP(w, r)
	})
}
