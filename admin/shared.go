package admin

import (
	"errors"
	"time"
)

// Shared is the state several clb nodes share (etcd, SPEC section 11) as the
// admin API sees it.
type Shared struct {
	// Act carries out enable, disable or drain of the instance named name,
	// at now, on every node (written to the shared state; applied here too
	// before it returns), in place of the Balancer's methods. Its error is
	// answered 503 if it wraps ErrUnavailable, 404 if it wraps
	// balancer.ErrUnknownInstance, else 409; the text is the error's.
	Act func(name, action string, now time.Time) error
	// Status, if set, is /api/v1/status's "etcd".
	Status func() SharedStatus
}

// SharedStatus is the shared state's status.
type SharedStatus struct {
	// Reachable: the store answered the last time it was asked. While it
	// does not, the node routes on the last state it had and refuses
	// enable, disable and drain.
	Reachable bool `json:"reachable"`
	// Error is why it is unreachable; absent when it is reachable.
	Error string `json:"error,omitempty"`
	// Revision is the last revision of the store this node has seen.
	Revision int64 `json:"revision"`
}

// ErrUnavailable is the shared state out of reach.
var ErrUnavailable = errors.New("shared state unavailable")

// Unavailable marks err as the shared state's being out of reach (503),
// keeping its text.
func Unavailable(err error) error { return unavailable{err} }

type unavailable struct{ error }

func (u unavailable) Is(target error) bool { return target == ErrUnavailable }
func (u unavailable) Unwrap() error        { return u.error }
