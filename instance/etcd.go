package instance

import (
	"context"
	"time"

	"go.uber.org/zap"

	"clb/etcdstate"
)

// Started is when the instance started, as it tells clb.
func (in *Instance) Started() time.Time { return in.startedAt }

// Register registers the instance in etcd, under prefix's
// instances/NAME, with its addresses, weight 100 and start time, and keeps
// the lease alive until ctx ends, then deregisters it. The channel is closed
// when it has.
func (in *Instance) Register(ctx context.Context, endpoints []string, prefix string, log *zap.Logger) <-chan struct{} {
	reg := etcdstate.Registration{SIP: in.SIPAddr(), HTTP: in.HTTPAddr(), Weight: 100, Started: in.startedAt.UTC()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := etcdstate.Register(ctx, etcdstate.Registrant{Endpoints: endpoints, Prefix: prefix, Name: in.name,
			Registration: reg, Logger: log}, nil)
		if err != nil {
			log.Error("etcd registration", zap.Error(err))
		}
	}()
	return done
}
