package etcdkv

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// WatchRequest follows Key, or the keys from Key up to RangeEnd, from
// StartRevision on (0: from now).
type WatchRequest struct {
	Key           []byte `json:"key"`
	RangeEnd      []byte `json:"range_end,omitempty"`
	StartRevision int64  `json:"start_revision,omitempty,string"`
}

// EventDelete is the Type of a deleted key's Event (a put's is empty).
const EventDelete = "DELETE"

// Event is a change to a key: a put, or a delete (Type EventDelete; the
// KeyValue then has only the key and its ModRevision).
type Event struct {
	Type string   `json:"type"`
	Kv   KeyValue `json:"kv"`
}

// WatchResponse is the events of one or more revisions, in their order; a
// revision's events are never split over two.
type WatchResponse struct {
	Header          Header  `json:"header"`
	Events          []Event `json:"events"`
	Created         bool    `json:"created"`
	Canceled        bool    `json:"canceled"`
	CompactRevision int64   `json:"compact_revision,string"`
	CancelReason    string  `json:"cancel_reason"`
}

// ErrCompacted is a watch from a revision etcd has compacted away: the
// caller must read the keys again.
var ErrCompacted = errors.New("etcdserver: mvcc: required revision has been compacted")

// Watch follows req's keys from req.StartRevision, calling deliver with
// every response that has events, in order, until ctx ends (ctx.Err()),
// deliver returns an error (that error), or etcd ends the watch (a
// revision compacted: an error that wraps ErrCompacted; or refused or
// canceled: an *Error or etcd's reason).
//
// A stream that breaks, or cannot be opened (no member reachable), is
// opened again 100ms later (RetryDelay if shorter), then up to RetryDelay
// apart, on the endpoint that answers, from the revision after the last
// one delivered.
func (c *Client) Watch(ctx context.Context, req WatchRequest, deliver func(*WatchResponse) error) error {
	delay := min(100*time.Millisecond, c.retryDelay)
	for {
		opened, err := c.watchOnce(ctx, &req, deliver)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var broken *brokenStream
		if !errors.As(err, &broken) {
			return err
		}
		if opened {
			delay = min(100*time.Millisecond, c.retryDelay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*8/5, c.retryDelay)
	}
}

// brokenStream is a stream lost, or not opened, to be opened again.
type brokenStream struct{ err error }

func (e *brokenStream) Error() string { return e.err.Error() }
func (e *brokenStream) Unwrap() error { return e.err }

// watchOnce opens one stream and delivers its responses, advancing
// req.StartRevision past each; it says whether etcd created the watch.
func (c *Client) watchOnce(ctx context.Context, req *WatchRequest, deliver func(*WatchResponse) error) (bool, error) {
	body, err := json.Marshal(struct {
		Create *WatchRequest `json:"create_request"`
	}{req})
	if err != nil {
		return false, err
	}
	var s *stream
	err = c.each(ctx, true, func(ep int) error {
		resp, err := c.post(ctx, ep, "/v3/watch", body)
		if err != nil {
			return err
		}
		s = c.newStream(ep, resp.Body)
		return nil
	})
	if err != nil {
		var ee *Error
		if errors.As(err, &ee) && !ee.unavailable() {
			return false, err // etcd refused the request: not one to repeat
		}
		return false, &brokenStream{err}
	}
	defer s.body.Close()
	opened := false
	for {
		var res WatchResponse
		if err := s.next(&res); err != nil {
			// As the official client: etcd's errors end the watch, but
			// for a member that stops or a connection lost.
			var ee *Error
			var me *messageError
			if errors.As(err, &me) || (errors.As(err, &ee) && !ee.unavailable() && ee.Code != codeInternal) {
				return opened, err
			}
			return opened, &brokenStream{err}
		}
		switch {
		case res.CompactRevision != 0:
			return opened, fmt.Errorf("watch from revision %d, compacted up to %d: %w", req.StartRevision, res.CompactRevision, ErrCompacted)
		case res.Canceled:
			return opened, fmt.Errorf("etcd %s: watch canceled: %s", s.endpoint, cmp.Or(res.CancelReason, "no reason given"))
		case res.Created:
			opened = true
		}
		if len(res.Events) == 0 {
			continue // created, or a progress notice
		}
		req.StartRevision = res.Events[len(res.Events)-1].Kv.ModRevision + 1
		if err := deliver(&res); err != nil {
			return opened, err
		}
	}
}
