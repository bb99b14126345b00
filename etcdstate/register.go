package etcdstate

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"

	"clb/config"
	"clb/etcdkv"
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
	client, err := newClient(config.Etcd{Endpoints: r.Endpoints, DialTimeout: r.Timeout})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer client.Close()
	key := r.Prefix + instancesDir + r.Name
	retry := 100 * time.Millisecond
	for {
		lease, err := r.register(ctx, client, key, value)
		if err == nil {
			retry = 100 * time.Millisecond
			r.Logger.Info("registered in etcd", zap.String("key", key), zap.Int64("lease", lease.ID))
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
func (r Registrant) register(ctx context.Context, client *etcdkv.Client, key string, value []byte) (*etcdkv.Lease, error) {
	lease, err := client.Grant(ctx, r.TTL)
	if err != nil {
		return nil, err
	}
	if _, err := client.Put(ctx, etcdkv.PutRequest{Key: []byte(key), Value: value, Lease: lease.ID}); err != nil {
		return nil, err
	}
	return lease, nil
}

// keepAlive keeps the lease alive until ctx ends (then revokes it) or the
// lease is lost.
func (r Registrant) keepAlive(ctx context.Context, client *etcdkv.Client, lease *etcdkv.Lease) error {
	if err := client.KeepAlive(ctx, lease.ID, time.Duration(lease.TTL)*time.Second); err != nil {
		return err
	}
	if err := client.Revoke(context.Background(), lease.ID); err != nil { // within the client's timeout
		r.Logger.Warn("etcd lease not revoked; the registration goes when it expires", zap.Error(err))
	}
	return nil
}
