package etcdkv_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"clb/certs/certstest"
	"clb/etcdkv"
	"clb/etcdstate/etcdtest"
)

func newClient(t *testing.T, cfg etcdkv.Config) *etcdkv.Client {
	t.Helper()
	c, err := etcdkv.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// official is etcd's own client, writing what the tests read with etcdkv.
func official(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, c *clientv3.Client, key, value string, opts ...clientv3.OpOption) int64 {
	t.Helper()
	res, err := c.Put(ctxFor(t), key, value, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return res.Header.Revision
}

var prefix = []byte("/t/")

// watching is a Watch of prefix run until the test ends.
type watching struct {
	events chan etcdkv.Event
	done   chan struct{} // closed when Watch has returned err
	err    error
	cancel context.CancelFunc
}

func startWatch(t *testing.T, c *etcdkv.Client, rev int64) *watching {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watching{events: make(chan etcdkv.Event, 100), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(w.done)
		w.err = c.Watch(ctx, etcdkv.WatchRequest{Key: prefix, RangeEnd: etcdkv.PrefixEnd(prefix), StartRevision: rev},
			func(res *etcdkv.WatchResponse) error {
				for _, ev := range res.Events {
					w.events <- ev
				}
				return nil
			})
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// next is the next event, which must be a put of key at rev (a delete if
// value is empty).
func (w *watching) next(t *testing.T, key, value string, rev int64) {
	t.Helper()
	select {
	case ev := <-w.events:
		del := value == ""
		if string(ev.Kv.Key) != key || string(ev.Kv.Value) != value || ev.Kv.ModRevision != rev || (ev.Type == etcdkv.EventDelete) != del {
			t.Fatalf("event %s %s=%q at %d, want %s=%q at %d (delete %v)", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision, key, value, rev, del)
		}
	case <-w.done:
		t.Fatalf("watch ended: %v; want %s at %d", w.err, key, rev)
	case <-time.After(10 * time.Second):
		t.Fatalf("no event in 10 s; want %s at %d", key, rev)
	}
}

// TestRangePutWatch: what clb reads and writes: a put's revision, a range
// of a prefix and its count, a watch's puts and deletes, in order.
func TestRangePutWatch(t *testing.T) {
	etcd := etcdtest.Start(t)
	c := newClient(t, etcdkv.Config{Endpoints: []string{etcd.URL()}})
	ctx := ctxFor(t)
	pa, err := c.Put(ctx, etcdkv.PutRequest{Key: []byte("/t/a"), Value: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, c, pa.Header.Revision)
	w.next(t, "/t/a", "1", pa.Header.Revision)
	ref := official(t, etcd.URL())
	rb := put(t, ref, "/t/b", `{"x": "\n"}`)
	w.next(t, "/t/b", `{"x": "\n"}`, rb)
	put(t, ref, "/u", "outside")
	del, err := ref.Delete(ctx, "/t/a")
	if err != nil {
		t.Fatal(err)
	}
	w.next(t, "/t/a", "", del.Header.Revision)

	res, err := c.Range(ctx, etcdkv.RangeRequest{Key: prefix, RangeEnd: etcdkv.PrefixEnd(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.KVs) != 1 || string(res.KVs[0].Key) != "/t/b" || res.KVs[0].ModRevision != rb || res.Count != 1 || res.Header.Revision != del.Header.Revision {
		t.Errorf("range %+v, want /t/b at %d, count 1, revision %d", res, rb, del.Header.Revision)
	}
	res, err = c.Range(ctx, etcdkv.RangeRequest{Key: []byte("/u"), CountOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.KVs) != 0 || res.Count != 1 {
		t.Errorf("count of /u: %+v, want 1 and no keys", res)
	}
}

// TestWatchResumes: a watch broken by etcd's restart, and by a cut
// network path, resumes from the revision after the last it delivered:
// what was written while it was cut comes, in order, nothing twice, and
// Watch itself never returns.
func TestWatchResumes(t *testing.T) {
	etcd := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, strings.TrimPrefix(etcd.URL(), "http://"))
	c := newClient(t, etcdkv.Config{Endpoints: []string{proxy.URL()}, Timeout: 500 * time.Millisecond})
	ref := official(t, etcd.URL())
	r0 := put(t, ref, "/t/k0", "0")
	w := startWatch(t, c, r0)
	w.next(t, "/t/k0", "0", r0)

	etcd.Stop()
	etcd.Start()
	r1 := put(t, ref, "/t/k1", "1")
	w.next(t, "/t/k1", "1", r1) // not k0 again

	proxy.Cut()
	r2 := put(t, ref, "/t/k2", "2")
	r3 := put(t, ref, "/t/k3", "3")
	proxy.Restore()
	r4 := put(t, ref, "/t/k4", "4")
	w.next(t, "/t/k2", "2", r2)
	w.next(t, "/t/k3", "3", r3)
	w.next(t, "/t/k4", "4", r4)
	select {
	case <-w.done:
		t.Errorf("watch ended: %v", w.err)
	default:
	}
	w.cancel()
	<-w.done
	if !errors.Is(w.err, context.Canceled) {
		t.Errorf("watch ended with %v once its context did, want %v", w.err, context.Canceled)
	}
}

// TestWatchCompacted: a watch from a revision compacted away ends with
// ErrCompacted, for its caller to read the keys again.
func TestWatchCompacted(t *testing.T) {
	etcd := etcdtest.Start(t)
	c := newClient(t, etcdkv.Config{Endpoints: []string{etcd.URL()}})
	ref := official(t, etcd.URL())
	r0 := put(t, ref, "/t/k", "0")
	r1 := put(t, ref, "/t/k", "1")
	if _, err := ref.Compact(ctxFor(t), r1); err != nil {
		t.Fatal(err)
	}
	err := c.Watch(ctxFor(t), etcdkv.WatchRequest{Key: prefix, RangeEnd: etcdkv.PrefixEnd(prefix), StartRevision: r0},
		func(res *etcdkv.WatchResponse) error { return fmt.Errorf("delivered %+v", res) })
	if !errors.Is(err, etcdkv.ErrCompacted) {
		t.Errorf("watch from a compacted revision: %v, want %v", err, etcdkv.ErrCompacted)
	}
}

// TestLeaseExpires: a key under a lease not kept alive goes when the lease
// expires (a delete event); the lease is then not found, to KeepAliveOnce,
// KeepAlive and a put, with etcd's own message. A lease kept alive outlives
// another of the same TTL that expired.
func TestLeaseExpires(t *testing.T) {
	etcd := etcdtest.Start(t)
	c := newClient(t, etcdkv.Config{Endpoints: []string{etcd.URL()}})
	ctx := ctxFor(t)
	kept, err := c.Grant(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lost, err := c.Grant(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if kept.ID == 0 || kept.TTL < 1 || lost.ID == kept.ID {
		t.Fatalf("leases %+v and %+v", kept, lost)
	}
	kctx, kcancel := context.WithCancel(context.Background())
	kdone := make(chan error, 1)
	go func() { kdone <- c.KeepAlive(kctx, kept.ID, time.Duration(kept.TTL)*time.Second) }()
	defer kcancel()
	var rev int64
	for _, l := range []*etcdkv.Lease{kept, lost} {
		res, err := c.Put(ctx, etcdkv.PutRequest{Key: fmt.Appendf(nil, "/t/%x", l.ID), Value: []byte("v"), Lease: l.ID})
		if err != nil {
			t.Fatal(err)
		}
		rev = res.Header.Revision
	}
	if ttl, err := c.KeepAliveOnce(ctx, lost.ID); err != nil || ttl < 1 {
		t.Fatalf("KeepAliveOnce of a live lease: %d, %v", ttl, err)
	}
	w := startWatch(t, c, rev+1)
	select {
	case ev := <-w.events:
		if ev.Type != etcdkv.EventDelete || string(ev.Kv.Key) != fmt.Sprintf("/t/%x", lost.ID) {
			t.Fatalf("event %s %s, want the delete of the lost lease's key", ev.Type, ev.Kv.Key)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lease not kept alive did not expire in 10 s")
	}
	res, err := c.Range(ctx, etcdkv.RangeRequest{Key: fmt.Appendf(nil, "/t/%x", kept.ID)})
	if err != nil || len(res.KVs) != 1 || res.KVs[0].Lease != kept.ID {
		t.Errorf("the key of the lease kept alive: %+v, %v; want it there, under lease %x", res, err, kept.ID)
	}

	if _, err := c.KeepAliveOnce(ctx, lost.ID); !errors.Is(err, etcdkv.ErrLeaseNotFound) {
		t.Errorf("KeepAliveOnce of an expired lease: %v, want %v", err, etcdkv.ErrLeaseNotFound)
	}
	if err := c.KeepAlive(ctx, lost.ID, time.Second); !errors.Is(err, etcdkv.ErrLeaseNotFound) {
		t.Errorf("KeepAlive of an expired lease: %v, want %v", err, etcdkv.ErrLeaseNotFound)
	}
	_, err = c.Put(ctx, etcdkv.PutRequest{Key: []byte("/t/x"), Value: []byte("v"), Lease: lost.ID})
	var ee *etcdkv.Error
	if !errors.As(err, &ee) || ee.Status != 404 || ee.Message != "etcdserver: requested lease not found" ||
		!errors.Is(err, etcdkv.ErrLeaseNotFound) || err.Error() != "etcd "+etcd.URL()+": etcdserver: requested lease not found" {
		t.Errorf("put under an expired lease: %#v, want etcd's 404 requested lease not found", err)
	}
	kcancel()
	if err := <-kdone; err != nil {
		t.Errorf("KeepAlive of a lease kept, until its context ended: %v", err)
	}
	if err := c.Revoke(ctx, kept.ID); err != nil {
		t.Errorf("revoke: %v", err)
	}
	if err := c.Revoke(ctx, kept.ID); !errors.Is(err, etcdkv.ErrLeaseNotFound) {
		t.Errorf("revoke of a revoked lease: %v, want %v", err, etcdkv.ErrLeaseNotFound)
	}
}

// TestFailover: with the first endpoint down, every call goes to the next;
// with all down, the error says why.
func TestFailover(t *testing.T) {
	etcd := etcdtest.Start(t)
	down := fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t))
	c := newClient(t, etcdkv.Config{Endpoints: []string{down, etcd.URL()}})
	ctx := ctxFor(t)
	res, err := c.Put(ctx, etcdkv.PutRequest{Key: []byte("/t/a"), Value: []byte("1")})
	if err != nil {
		t.Fatalf("put with the first endpoint down: %v", err)
	}
	w := startWatch(t, newClient(t, etcdkv.Config{Endpoints: []string{down, etcd.URL()}}), res.Header.Revision)
	w.next(t, "/t/a", "1", res.Header.Revision)
	lease, err := c.Grant(ctx, time.Second)
	if err != nil {
		t.Fatalf("grant with the first endpoint down: %v", err)
	}
	if _, err := c.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatalf("keepalive with the first endpoint down: %v", err)
	}
	if r, err := c.Range(ctx, etcdkv.RangeRequest{Key: []byte("/t/a")}); err != nil || len(r.KVs) != 1 {
		t.Fatalf("range with the first endpoint down: %+v, %v", r, err)
	}

	etcd.Stop()
	_, err = c.Range(ctx, etcdkv.RangeRequest{Key: []byte("/t/a")})
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("range with every endpoint down: %v, want connection refused", err)
	}
}

// TestBounded: an answer, or a watch's message, over MaxMessage is refused,
// and the watch ends rather than read it again and again.
func TestBounded(t *testing.T) {
	etcd := etcdtest.Start(t)
	c := newClient(t, etcdkv.Config{Endpoints: []string{etcd.URL()}, MaxMessage: 300})
	rev := put(t, official(t, etcd.URL()), "/t/big", strings.Repeat("x", 300))
	_, err := c.Range(ctxFor(t), etcdkv.RangeRequest{Key: prefix, RangeEnd: etcdkv.PrefixEnd(prefix)})
	if err == nil || !strings.Contains(err.Error(), "over 300 bytes") {
		t.Errorf("range of a big value: %v, want over 300 bytes", err)
	}
	err = c.Watch(ctxFor(t), etcdkv.WatchRequest{Key: prefix, RangeEnd: etcdkv.PrefixEnd(prefix), StartRevision: rev},
		func(res *etcdkv.WatchResponse) error { return fmt.Errorf("delivered %+v", res) })
	if err == nil || !strings.Contains(err.Error(), "over 300 bytes") {
		t.Errorf("watch of a big value: %v, want over 300 bytes", err)
	}
}

// TestTimeout: a member that accepts and never answers costs a call its
// Timeout, not forever.
func TestTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	c := newClient(t, etcdkv.Config{Endpoints: []string{"http://" + ln.Addr().String()}, Timeout: 100 * time.Millisecond})
	if _, err := c.Range(context.Background(), etcdkv.RangeRequest{Key: prefix}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("range of a silent member: %v, want %v", err, context.DeadlineExceeded)
	}
}

// TestHTTPS: an https:// endpoint is spoken to over TLS, its certificate
// verified against the system's roots: refused while they lack its
// authority, served once they hold it (SSL_CERT_FILE, in a process of its
// own: a process reads the system's roots once).
func TestHTTPS(t *testing.T) {
	ca := certstest.NewCA(t, "etcd test CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, certstest.Leaf{Name: "etcd"}).Write(t, dir, "etcd")
	etcd := etcdtest.StartTLS(t, cert, key)
	c := newClient(t, etcdkv.Config{Endpoints: []string{etcd.URL()}})
	_, err := c.Range(ctxFor(t), etcdkv.RangeRequest{Key: prefix})
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Errorf("range of a member whose certificate's authority the system does not know: %v, want a verification error", err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestHTTPSTrusted$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+ca.WriteCA(t, dir, "ca"), "ETCDKV_TEST_HTTPS="+etcd.URL())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestHTTPSTrusted") {
		t.Errorf("with the authority in the system's roots: %v\n%s", err, out)
	}
}

// TestHTTPSTrusted is TestHTTPS's process whose system roots hold the
// member's authority.
func TestHTTPSTrusted(t *testing.T) {
	url := os.Getenv("ETCDKV_TEST_HTTPS")
	if url == "" {
		t.Skip("TestHTTPS runs it")
	}
	c := newClient(t, etcdkv.Config{Endpoints: []string{url}})
	res, err := c.Put(ctxFor(t), etcdkv.PutRequest{Key: []byte("/t/tls"), Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Range(ctxFor(t), etcdkv.RangeRequest{Key: []byte("/t/tls")})
	if err != nil || len(r.KVs) != 1 || string(r.KVs[0].Value) != "v" || r.KVs[0].ModRevision != res.Header.Revision {
		t.Errorf("range over TLS: %+v, %v; want /t/tls=v at %d", r, err, res.Header.Revision)
	}
}

// TestNewRefusesBadEndpoints: New checks its endpoints; it dials nothing.
func TestNewRefusesBadEndpoints(t *testing.T) {
	for _, eps := range [][]string{nil, {"127.0.0.1:2379"}, {"ftp://h:1"}, {"http://h:1/path"}, {"http://u@h:1"}} {
		if _, err := etcdkv.New(etcdkv.Config{Endpoints: eps}); err == nil {
			t.Errorf("endpoints %q: no error", eps)
		}
	}
	if _, err := etcdkv.New(etcdkv.Config{Endpoints: []string{"http://127.0.0.1:1", "https://etcd.example:2379/"}}); err != nil {
		t.Errorf("good endpoints: %v", err)
	}
}
