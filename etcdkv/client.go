package etcdkv

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Config configures a Client.
type Config struct {
	// Endpoints are the etcd members' client URLs, http://host:port or
	// https://host:port. Required.
	Endpoints []string
	// Timeout bounds dialling a member, and each call but a watch's stream
	// once open. Default 2s.
	Timeout time.Duration
	// RetryDelay is the longest Watch waits before it opens a broken stream
	// again, and KeepAlive before it renews again after a failure. Default
	// 250ms.
	RetryDelay time.Duration
	// MaxMessage bounds the size of a response, and of each message of a
	// watch's stream. Default 64 MiB: a range of clb's whole prefix, with
	// thousands of instances, is a few MB.
	MaxMessage int
}

// Client is a session with an etcd cluster through its JSON gateway.
type Client struct {
	endpoints  []string // base URLs, without a trailing /
	timeout    time.Duration
	retryDelay time.Duration
	maxMessage int
	http       *http.Client
	current    atomic.Int32 // the endpoint that answered last
}

// New makes a Client; it does not dial (the first call does).
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	c := &Client{timeout: cfg.Timeout, retryDelay: cfg.RetryDelay, maxMessage: cfg.MaxMessage}
	if c.timeout <= 0 {
		c.timeout = 2 * time.Second
	}
	if c.retryDelay <= 0 {
		c.retryDelay = 250 * time.Millisecond
	}
	if c.maxMessage <= 0 {
		c.maxMessage = 64 << 20
	}
	for _, ep := range cfg.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("etcd endpoint %q: want http://host:port or https://host:port", ep)
		}
		c.endpoints = append(c.endpoints, u.Scheme+"://"+u.Host)
	}
	dialer := &net.Dialer{Timeout: c.timeout}
	transport := &http.Transport{
		// No proxy from the environment: etcd's members are the cluster's
		// own, and a watch's stream must not sit in a proxy's buffer.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err}
			}
			return conn, nil
		},
		// The system's roots, as the official client's TLS had without a
		// configuration of its own.
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   c.timeout,
		ResponseHeaderTimeout: c.timeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       time.Minute,
	}
	c.http = &http.Client{Transport: transport}
	return c, nil
}

// Close closes the idle connections. The calls under way end with their
// contexts; call Close once they have.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// Error is an error etcd answered with: its gateway's status and etcd's own
// message.
type Error struct {
	Endpoint string
	Status   int    // the HTTP status
	Code     int    // the gRPC code etcd gave
	Message  string // etcd's, such as "etcdserver: requested lease not found"
}

func (e *Error) Error() string { return fmt.Sprintf("etcd %s: %s", e.Endpoint, e.Message) }

// Is matches ErrLeaseNotFound by etcd's message.
func (e *Error) Is(target error) bool {
	return target == ErrLeaseNotFound && e.Message == leaseNotFound
}

const leaseNotFound = "etcdserver: requested lease not found"

// ErrLeaseNotFound is a lease etcd does not have (expired, or revoked).
var ErrLeaseNotFound = errors.New(leaseNotFound)

// dialError is a connection that could not be made: nothing was sent.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// repeat says whether a call that failed with err may be sent to the next
// endpoint: always if it was never sent, and if it was, only a call that
// changes nothing (idempotent) or one etcd said it could not serve (503:
// no leader, a member stopping).
func repeat(err error, idempotent bool) bool {
	var de *dialError
	var me *messageError
	switch {
	case errors.As(err, &de):
		return true
	case errors.As(err, &me):
		return false // the same answer again
	}
	if !idempotent {
		return false
	}
	var ee *Error
	if errors.As(err, &ee) {
		return ee.unavailable()
	}
	return true // a transport error: the member may be gone
}

// gRPC's codes that the gateway passes on.
const (
	codeInternal    = 13
	codeUnavailable = 14
)

// unavailable is a member that cannot serve now (no leader, stopping).
func (e *Error) unavailable() bool {
	return e.Status == http.StatusServiceUnavailable || e.Code == codeUnavailable
}

// call posts req, as JSON, to path on the current endpoint, and on those
// after it while repeat allows, within the client's timeout, and decodes
// the answer into res.
func (c *Client) call(ctx context.Context, path string, req, res any, idempotent bool) error {
	return c.exchange(ctx, path, req, idempotent, func(ep int, body io.ReadCloser) error {
		data, err := c.read(body)
		if err != nil {
			return fmt.Errorf("etcd %s: %s: %w", c.endpoints[ep], path, err)
		}
		if err := json.Unmarshal(data, res); err != nil {
			return &messageError{fmt.Errorf("etcd %s: %s: bad answer: %w", c.endpoints[ep], path, err)}
		}
		return nil
	})
}

// exchange is call with the answer's body read by decode.
func (c *Client) exchange(ctx context.Context, path string, req any, idempotent bool, decode func(ep int, body io.ReadCloser) error) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.each(ctx, idempotent, func(ep int) error {
		resp, err := c.post(ctx, ep, path, body)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return decode(ep, resp.Body)
	})
}

// each runs attempt on the current endpoint and, while it fails as repeat
// allows, on the next ones, each once; the endpoint that succeeded is the
// current one after.
func (c *Client) each(ctx context.Context, idempotent bool, attempt func(ep int) error) error {
	n := len(c.endpoints)
	first := int(c.current.Load())
	var err error
	for i := range n {
		ep := (first + i) % n
		if err = attempt(ep); err == nil {
			c.current.Store(int32(ep))
			return nil
		}
		if ctx.Err() != nil || !repeat(err, idempotent) {
			break
		}
		if i+1 < n {
			c.current.CompareAndSwap(int32(ep), int32((ep+1)%n))
		}
	}
	return err
}

// post sends body to path on endpoint ep; a status other than 200 is an
// *Error.
func (c *Client) post(ctx context.Context, ep int, path string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoints[ep]+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		data, _ := c.read(resp.Body)
		return nil, errorOf(c.endpoints[ep], resp.StatusCode, data)
	}
	return resp, nil
}

// read reads a whole answer of at most maxMessage bytes.
func (c *Client) read(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, int64(c.maxMessage)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > c.maxMessage {
		return nil, &messageError{fmt.Errorf("answer over %d bytes", c.maxMessage)}
	}
	return data, nil
}

// errorOf reads the gateway's error body: {"error": "...", "code": N,
// "message": "..."}, or in a stream {"error": {"grpc_code": N,
// "http_code": N, "message": "..."}}.
func errorOf(endpoint string, status int, body []byte) *Error {
	e := &Error{Endpoint: endpoint, Status: status}
	var flat struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Error   string `json:"error"`
	}
	var nested struct {
		Error struct {
			Code    int    `json:"grpc_code"`
			Status  int    `json:"http_code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	switch {
	case json.Unmarshal(body, &flat) == nil && (flat.Message != "" || flat.Error != ""):
		e.Code, e.Message = flat.Code, cmp.Or(flat.Message, flat.Error)
	case json.Unmarshal(body, &nested) == nil && nested.Error.Message != "":
		e.Code, e.Message = nested.Error.Code, nested.Error.Message
		if nested.Error.Status != 0 {
			e.Status = nested.Error.Status
		}
	default: // not etcd's gateway
		text := strings.TrimSpace(string(body[:min(len(body), 200)]))
		e.Message = strings.TrimSpace(fmt.Sprintf("%d %s %s", status, http.StatusText(status), text))
	}
	return e
}

// stream reads the gateway's stream of messages, one JSON object a line:
// {"result": ...} or {"error": ...}.
type stream struct {
	endpoint string
	body     io.ReadCloser
	r        *bufio.Reader
	max      int
	line     []byte
}

func (c *Client) newStream(ep int, body io.ReadCloser) *stream {
	return &stream{endpoint: c.endpoints[ep], body: body, r: newReader(body), max: c.maxMessage}
}

func newReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 4096) }

// messageError is a message of a stream that cannot be read (too large,
// not JSON): reading it again would fail again.
type messageError struct{ err error }

func (e *messageError) Error() string { return e.err.Error() }
func (e *messageError) Unwrap() error { return e.err }

// next decodes the next message's result into res; an error message is an
// *Error.
func (s *stream) next(res any) error {
	s.line = s.line[:0]
	for {
		chunk, err := s.r.ReadSlice('\n')
		if len(s.line)+len(chunk) > s.max+1 {
			return &messageError{fmt.Errorf("etcd %s: a message over %d bytes", s.endpoint, s.max)}
		}
		s.line = append(s.line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil && (err != io.EOF || len(bytes.TrimSpace(s.line)) == 0) {
			return err
		}
		if len(bytes.TrimSpace(s.line)) == 0 {
			continue // a blank line between messages
		}
		// One pass: the result is decoded into res where it stands.
		msg := struct {
			Result any             `json:"result"`
			Error  json.RawMessage `json:"error"`
		}{Result: res}
		if err := json.Unmarshal(s.line, &msg); err != nil {
			return &messageError{fmt.Errorf("etcd %s: bad message: %w", s.endpoint, err)}
		}
		if msg.Error != nil {
			return errorOf(s.endpoint, http.StatusOK, s.line)
		}
		return nil
	}
}
