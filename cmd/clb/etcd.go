package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"clb/admin"
	"clb/config"
	"clb/etcdstate"
)

// startEtcd makes the node's etcd session (etcd: configured), to be run by
// run; it returns the membership subscriber it needs.
func (n *node) startEtcd(cfg *config.Config, instances []config.Instance) func([]config.Instance) {
	n.etcd = etcdstate.New(etcdstate.Options{Config: *cfg.Etcd, Balancer: n.bal, Logger: n.log.Named("etcd")})
	n.etcd.SetInstances(instances) // the list the node starts with, which the fan-out does not hand on
	n.metrics.EtcdUp(n.etcd.Up)
	return n.etcd.SetInstances
}

// shared is the admin API's view of etcd; nil without it.
func (n *node) shared() *admin.Shared {
	if n.etcd == nil {
		return nil
	}
	return &admin.Shared{
		Act: func(name, action string, now time.Time) error {
			err := n.etcd.Act(name, action, now)
			if errors.Is(err, etcdstate.ErrUnreachable) {
				return admin.Unavailable(err)
			}
			return err
		},
		Status: func() admin.SharedStatus {
			st := n.etcd.Status()
			return admin.SharedStatus{Reachable: st.Reachable, Error: st.Error, Revision: st.Revision}
		},
	}
}

// sharedClusterWeight sets a cluster's weight through etcd, so that every
// node applies it (SPEC sections 11 and 13); nil without etcd.
func (n *node) sharedClusterWeight() func(string, int) error {
	if n.etcd == nil {
		return nil
	}
	return func(name string, weight int) error {
		err := n.etcd.SetClusterWeight(name, weight)
		if errors.Is(err, etcdstate.ErrUnreachable) {
			return admin.Unavailable(err)
		}
		return err
	}
}

// runEtcd follows etcd until ctx ends: its registrations are the
// membership's second source, after the file.
func (n *node) runEtcd(ctx context.Context) error {
	return n.members.Run(ctx, "etcd", n.etcd)
}

// printEtcd is clb ctl status's line about etcd.
func printEtcd(w io.Writer, st *admin.SharedStatus) error {
	if st.Reachable {
		_, err := fmt.Fprintf(w, "etcd reachable, at revision %d\n", st.Revision)
		return err
	}
	_, err := fmt.Fprintf(w, "etcd unreachable: %s (routing on the last state known, from revision %d; enable, disable and drain are refused)\n",
		st.Error, st.Revision)
	return err
}
