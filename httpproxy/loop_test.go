package httpproxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
)

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// loopNode is a clb HTTP front end on its own listener whose one instance
// is at target (set before it serves).
type loopNode struct {
	ln  *countingListener
	srv *Server
}

func newLoopNodes(t *testing.T, n int) []*loopNode {
	t.Helper()
	nodes := make([]*loopNode, n)
	for i := range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = &loopNode{ln: &countingListener{Listener: ln}}
	}
	for i, nd := range nodes {
		next := nodes[(i+1)%n].ln.Addr().(*net.TCPAddr)
		bal, err := balancer.New([]config.Instance{{Name: "next", Weight: 100, HTTP: config.HTTPAddr{Endpoint: config.Endpoint{
			Transport: "http", Host: "127.0.0.1", Port: next.Port}}}}, loadfactor.DefaultParams())
		if err != nil {
			t.Fatal(err)
		}
		nd.srv = New(nd.ln, "http", Options{Balancer: bal})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = nd.srv.Serve(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return nodes
}

// TestLoopEnds: an instance address that leads back to clb, directly or
// through a second clb node, ends in 508 after one round, with one request
// per hop and no amplification.
func TestLoopEnds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes int
	}{{"instance is clb itself", 1}, {"through a second clb node", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := newLoopNodes(t, tc.nodes)
			cl := &http.Client{Timeout: 10 * time.Second}
			res, err := cl.Get("http://" + nodes[0].ln.Addr().String() + "/x")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 508 {
				t.Errorf("status %d, want 508", res.StatusCode)
			}
			// The client's connection and the one back from the last node to
			// the first; every other node once.
			want := []int32{2, 1}
			for i, nd := range nodes {
				if got := nd.ln.n.Load(); got != want[i] {
					t.Errorf("node %d accepted %d connections, want %d", i, got, want[i])
				}
			}
		})
	}
}
