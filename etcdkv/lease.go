package etcdkv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Lease is a lease etcd granted: its ID and TTL in seconds.
type Lease struct {
	Header Header `json:"header"`
	ID     int64  `json:"ID,string"`
	TTL    int64  `json:"TTL,string"`
	// Error is etcd's reason for granting none.
	Error string `json:"error"`
}

type leaseRequest struct {
	ID  int64 `json:"ID,omitempty,string"`
	TTL int64 `json:"TTL,omitempty,string"`
}

// Grant asks for a lease of ttl (whole seconds, at least one); etcd may
// grant a longer one, its minimum.
func (c *Client) Grant(ctx context.Context, ttl time.Duration) (*Lease, error) {
	seconds := max(int64((ttl+time.Second-1)/time.Second), 1)
	res := new(Lease)
	if err := c.call(ctx, "/v3/lease/grant", leaseRequest{TTL: seconds}, res, false); err != nil {
		return nil, err
	}
	if res.Error != "" {
		return nil, fmt.Errorf("etcd: lease not granted: %s", res.Error)
	}
	return res, nil
}

// Revoke ends a lease and deletes the keys attached to it.
func (c *Client) Revoke(ctx context.Context, id int64) error {
	var res struct {
		Header Header `json:"header"`
	}
	return c.call(ctx, "/v3/lease/revoke", leaseRequest{ID: id}, &res, true)
}

// KeepAliveOnce renews a lease and returns its TTL (seconds) from now; a
// lease etcd no longer has is ErrLeaseNotFound.
func (c *Client) KeepAliveOnce(ctx context.Context, id int64) (int64, error) {
	var ttl int64
	// A stream on the gateway: the request's end closes it once etcd has
	// answered the one renewal.
	err := c.exchange(ctx, "/v3/lease/keepalive", leaseRequest{ID: id}, true, func(ep int, body io.ReadCloser) error {
		var res Lease
		if err := c.newStream(ep, body).next(&res); err != nil {
			return err
		}
		ttl = res.TTL
		return nil
	})
	if err != nil {
		return 0, err
	}
	if ttl <= 0 {
		return 0, fmt.Errorf("lease %x: %w", id, ErrLeaseNotFound)
	}
	return ttl, nil
}

// KeepAlive renews a lease of ttl every third of it until ctx ends
// (returning nil) or the lease is lost: etcd no longer has it
// (ErrLeaseNotFound), or no renewal succeeded for a whole TTL. A failed
// renewal is tried again RetryDelay later.
func (c *Client) KeepAlive(ctx context.Context, id int64, ttl time.Duration) error {
	deadline := time.Now().Add(ttl)
	wait := ttl / 3
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		seconds, err := c.KeepAliveOnce(ctx, id)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrLeaseNotFound):
			return err
		case err != nil && time.Now().After(deadline):
			return fmt.Errorf("lease %x expired: not renewed for %v: %w", id, ttl, err)
		case err != nil:
			wait = min(c.retryDelay, time.Until(deadline))
		default:
			ttl = time.Duration(seconds) * time.Second
			deadline = time.Now().Add(ttl)
			wait = ttl / 3
		}
		t.Reset(wait)
	}
}
