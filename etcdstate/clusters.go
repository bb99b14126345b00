package etcdstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"clb/balancer"
)

// ClusterWeight is the value of PREFIX/clusters/NAME (SPEC section 11): a
// cluster's share of new sessions set at run time (SPEC section 13).
type ClusterWeight struct {
	Weight int       `json:"weight"`
	At     time.Time `json:"at"`
}

const clustersDir = "clusters/"

type clusterWeight struct {
	ClusterWeight
	rev int64
}

// putClusterLocked takes in PREFIX/clusters/NAME's value; a bad one is
// logged and ignored.
func (s *State) putClusterLocked(key, name string, value []byte, rev int64) {
	var w ClusterWeight
	if err := json.Unmarshal(value, &w); err != nil || w.Weight < 0 {
		s.log.Error("bad cluster weight in etcd; ignored", zap.String("key", key), zap.ByteString("value", value), zap.Error(err))
		return
	}
	if old, ok := s.weights[name]; !ok || rev > old.rev {
		s.weights[name] = clusterWeight{w, rev}
	}
}

// applyWeightsLocked gives the balancer every cluster weight it does not
// have yet; one of a cluster this node does not know waits for a reload
// that brings it.
func (s *State) applyWeightsLocked() {
	for name, w := range s.weights {
		if w.rev <= s.appliedWeights[name] {
			continue
		}
		if err := s.o.Balancer.SetClusterWeight(name, w.Weight); err != nil {
			if !errors.Is(err, balancer.ErrUnknownCluster) {
				s.log.Error("cluster weight from etcd", zap.String("cluster", name), zap.Int("weight", w.Weight), zap.Error(err))
			}
			continue
		}
		s.appliedWeights[name] = w.rev
		s.log.Info("cluster weight applied", zap.String("cluster", name), zap.Int("weight", w.Weight), zap.Int64("revision", w.rev))
	}
}

// SetClusterWeight writes a cluster's weight for every node and applies it
// here; it answers once etcd has it. With etcd out of reach it changes
// nothing and its error wraps ErrUnreachable; for a cluster this node does
// not know it wraps balancer.ErrUnknownCluster.
func (s *State) SetClusterWeight(name string, weight int) error {
	if _, ok := s.o.Balancer.Table().Cluster(name); !ok {
		return fmt.Errorf("%w %q", balancer.ErrUnknownCluster, name)
	}
	if weight < 0 {
		return fmt.Errorf("weight %d: must not be negative", weight)
	}
	w := ClusterWeight{Weight: weight, At: s.o.Now().UTC().Round(time.Millisecond)}
	rev, err := s.put(clustersDir+name, w)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reachedLocked(rev)
	if old, ok := s.weights[name]; !ok || rev > old.rev {
		s.weights[name] = clusterWeight{w, rev}
	}
	s.applyWeightsLocked()
	return nil
}
