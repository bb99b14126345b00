package sip

import (
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
	"clb/metrics"
)

// loopNodes starts n clb SIP front ends on UDP, each with one instance:
// the next one (the last's is the first), so that a request loops.
func loopNodes(t *testing.T, n int) ([]*Server, []*metrics.Metrics) {
	t.Helper()
	servers, ms := make([]*Server, n), make([]*metrics.Metrics, n)
	bals := make([]*balancer.Balancer, n)
	placeholder := []config.Instance{{Name: "next", Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1", Port: 1}}}}
	for i := range servers {
		bal, err := balancer.New(placeholder, loadfactor.DefaultParams())
		if err != nil {
			t.Fatal(err)
		}
		bals[i], ms[i] = bal, metrics.New(func() *balancer.Balancer { return bal })
		servers[i], err = NewServer(ServerOptions{
			ProxyOptions: ProxyOptions{Balancer: bal, Instances: placeholder, Metrics: ms[i]},
			Listen:       []config.SIPAddr{{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1"}}},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, srv := range servers {
		next := servers[(i+1)%n].transport("udp").selves()[0].addr
		in := []config.Instance{{Name: "next", Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{
			Transport: "udp", Host: next.Addr().String(), Port: int(next.Port())}}}}
		if err := bals[i].Update(in, loadfactor.DefaultParams(), time.Now()); err != nil {
			t.Fatal(err)
		}
		srv.SetInstances(in)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return servers, ms
}

// TestLoopEnds: an instance address that leads back to clb, directly or
// through a second clb node, ends in 482 at the caller after one round:
// one request forwarded per node, no amplification.
func TestLoopEnds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes int
	}{{"instance is clb itself", 1}, {"through a second clb node", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			servers, ms := loopNodes(t, tc.nodes)
			phone := newPeer(t, "phone", "udp", nil)
			clb := servers[0].transport("udp").selves()[0].addr
			phone.send(newInvite(phone, clb, "alice", "loop-1"), clb)
			phone.recvResponse(482)
			// The 482 is the last message clb sends: each node forwarded
			// the INVITE once (the first to its instance, a second one on
			// by the Request-URI, the request coming from its instance) and
			// the first, seeing its own Via, refused it.
			for i, m := range ms {
				forwarded, refused := sipRequests(t, m)
				wantRefused := 0
				if i == 0 {
					wantRefused = 1
				}
				if forwarded != 1 || refused != wantRefused {
					t.Errorf("node %d forwarded %d and refused %d requests, want 1 and %d", i, forwarded, refused, wantRefused)
				}
			}
			select {
			case e := <-phone.inbox:
				t.Errorf("phone got more than the 482:\n%s", e.raw)
			default:
			}
		})
	}
}

// sipRequests sums clb_requests_total for SIP: those sent on, and those
// clb answered itself.
func sipRequests(t *testing.T, m *metrics.Metrics) (forwarded, refused int) {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if !strings.HasPrefix(line, "clb_requests_total{") || !strings.Contains(line, `protocol="sip"`) {
			continue
		}
		n, err := strconv.Atoi(line[strings.LastIndexByte(line, ' ')+1:])
		if err != nil {
			t.Fatalf("metrics line %q", line)
		}
		if strings.Contains(line, `outcome="refused"`) {
			refused += n
		} else {
			forwarded += n
		}
	}
	return forwarded, refused
}
