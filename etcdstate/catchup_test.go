package etcdstate_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"clb/balancer"
	"clb/etcdstate/etcdtest"
)

// cutProxy forwards loopback TCP to etcd until cut, and again once
// restored, on the same port: a node's network path to etcd.
type cutProxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	p := &cutProxy{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(u, c); u.Close() })
			p.wg.Go(func() { _, _ = io.Copy(c, u); c.Close() })
		}
	})
}

// cut closes the listener and every connection, and waits for the copies.
func (p *cutProxy) cut() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *cutProxy) restore() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
}

// TestCatchUpAfterCompaction: a node cut off from etcd while actions were
// written and the history compacted cannot resume its watch from the
// revision it last saw; it loads the prefix again and applies the latest
// action per instance, from that action's at, as the node that stayed did.
func TestCatchUpAfterCompaction(t *testing.T) {
	etcd := etcdtest.Start(t)
	proxy := newCutProxy(t, etcd.URL()[len("http://"):])
	a, b := startNode(t, etcd.URL(), "a"), startNode(t, "http://"+proxy.addr, "b")

	proxy.cut()
	b.log.Await(t, "etcd unreachable", 10*time.Second)
	at := time.Now()
	if err := a.state.Act("a", "drain", at.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := a.state.Act("b", "disable", at); err != nil {
		t.Fatal(err)
	}
	if err := a.state.Act("a", "enable", at); err != nil { // the latest for a
		t.Fatal(err)
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.URL()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := client.Get(ctx, "/clb/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Compact(ctx, res.Header.Revision); err != nil {
		t.Fatal(err)
	}

	b.log.Mark()
	proxy.restore()
	b.log.Await(t, "etcd watch ended; loading the prefix again", 10*time.Second)
	b.log.Await(t, "admin action applied", 5*time.Second)
	b.log.Await(t, "admin action applied", 5*time.Second)
	if st := b.instance(t, "b", at); st.State != balancer.Disabled {
		t.Errorf("b on the node that caught up: %v, want disabled", st.State)
	}
	agree(t, a, b, "a", at)
	agree(t, a, b, "b", at)
}
