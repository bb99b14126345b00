package etcdstate

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"clb/config"
)

// Registrant is an instance registering itself under PREFIX/instances/NAME.
type Registrant struct {
	// Endpoints are etcd's client URLs.
	Endpoints []string
	// Prefix is clb's etcd.prefix; empty means config.DefaultEtcdPrefix.
	Prefix string
	// Name is the instance's name.
	Name string
	// Registration is what it says of itself.
	Registration Registration
	// TTL is the lease's: how long after the instance dies its entry goes.
	// Zero means 5 s.
	TTL time.Duration
	// Timeout bounds each call to etcd. Zero means 2 s.
	Timeout time.Duration
	Logger  *zap.Logger
}

// Register writes the registration under a lease and keeps the lease alive
// until ctx ends, then revokes it (a clean exit deregisters at once). A
// lease lost (etcd out of reach longer than the TTL) is granted and written
// again. registered, if not nil, is called each time the entry is written.
func Register(ctx context.Context, r Registrant, registered func()) error {
	if r.Prefix == "" {
		r.Prefix = config.DefaultEtcdPrefix
	}
	if r.TTL == 0 {
		r.TTL = 5 * time.Second
	}
	if r.Timeout == 0 {
		r.Timeout = 2 * time.Second
	}
	if r.Logger == nil {
		r.Logger = zap.NewNop()
	}
	value, err := json.Marshal(r.Registration)
	if err != nil {
		return err
	}
	client, err := newClient(config.Etcd{Endpoints: r.Endpoints, Prefix: r.Prefix, DialTimeout: r.Timeout}, r.Logger)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer client.Close()
	key := r.Prefix + instancesDir + r.Name
	retry := 100 * time.Millisecond
	for {
		lease, err := r.register(ctx, client, key, string(value))
		if err == nil {
			retry = 100 * time.Millisecond
			r.Logger.Info("registered in etcd", zap.String("key", key), zap.Int64("lease", int64(lease)))
			if registered != nil {
				registered()
			}
			err = r.keepAlive(ctx, client, lease)
		}
		if ctx.Err() != nil {
			return nil
		}
		r.Logger.Warn("etcd registration lost; registering again", zap.String("key", key), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
		retry = min(2*retry, 2*time.Second)
	}
}

// register grants a lease and writes key under it.
func (r Registrant) register(ctx context.Context, client *clientv3.Client, key, value string) (clientv3.LeaseID, error) {
	cctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	lease, err := client.Grant(cctx, int64((r.TTL+time.Second-1)/time.Second))
	if err != nil {
		return 0, err
	}
	if _, err := client.Put(cctx, key, value, clientv3.WithLease(lease.ID)); err != nil {
		return 0, err
	}
	return lease.ID, nil
}

// keepAlive keeps the lease alive until ctx ends (then revokes it) or the
// lease is lost.
func (r Registrant) keepAlive(ctx context.Context, client *clientv3.Client, lease clientv3.LeaseID) error {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := client.KeepAlive(kctx, lease)
	if err != nil {
		return err
	}
	for range ch {
	}
	if ctx.Err() == nil {
		return fmt.Errorf("lease %x expired", int64(lease))
	}
	rctx, rcancel := context.WithTimeout(context.Background(), r.Timeout)
	defer rcancel()
	if _, err := client.Revoke(rctx, lease); err != nil {
		r.Logger.Warn("etcd lease not revoked; the registration goes when it expires", zap.Error(err))
	}
	return nil
}
