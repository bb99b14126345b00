package sip

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
	"clb/metrics"
)

// twoNodes starts two clb SIP front ends that advertise one name, on
// 127.0.0.1:P and 127.0.0.2:P (one port, as behind one DNS name or virtual
// address), before the same instances.
func twoNodes(t *testing.T, name string, in []config.Instance) (a, b *Server) {
	t.Helper()
	var port int
	for range 20 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if c2, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port))); err == nil {
			c2.Close()
			break
		}
	}
	start := func(ip string) *Server {
		bal, err := balancer.New(in, loadfactor.DefaultParams())
		if err != nil {
			t.Fatal(err)
		}
		m := metrics.New(func() *balancer.Balancer { return bal })
		srv, err := NewServer(ServerOptions{
			ProxyOptions: ProxyOptions{Balancer: bal, Instances: in, Advertise: name, Metrics: m},
			Listen:       []config.SIPAddr{{Endpoint: config.Endpoint{Transport: "udp", Host: ip, Port: port}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return srv
	}
	return start("127.0.0.1"), start("127.0.0.2")
}

// TestAdvertisedNameAnyNode: with listen.advertise, clb names itself by the
// shared name in its Via and Record-Route, and a second node takes what the
// first record-routed: the instance's answers through it, and the caller's
// ACK and BYE, routed by the dialog's key to the same instance with the
// X-CLB-* fields, as the first node would have (SPEC section 11).
func TestAdvertisedNameAnyNode(t *testing.T) {
	inbox := make(chan envelope, 64)
	uas := newPeer(t, "inst1", "udp", inbox)
	in := []config.Instance{{Name: "inst1", Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{
		Transport: "udp", Host: "127.0.0.1", Port: int(uas.addr.Port())}}}}
	a, b := twoNodes(t, "sip.clb.test", in)
	nodeA, nodeB := a.transport("udp").selves()[0].addr, b.transport("udp").selves()[0].addr
	phone := newPeer(t, "phone", "udp", nil)

	inv := newInvite(phone, nodeA, "alice", "adv-1")
	phone.send(inv, nodeA)
	got := uas.recvRequest("INVITE")
	via, rr := header(got, "Via"), header(got, "Record-Route")
	wantHost := "sip.clb.test:" + strconv.Itoa(int(nodeA.Port()))
	if !strings.Contains(via, "UDP "+wantHost+";") || !strings.Contains(via, paramNode+"=") {
		t.Fatalf("clb's Via %q does not name %s with its node", via, wantHost)
	}
	if !strings.HasPrefix(rr, "<sip:"+wantHost+";") {
		t.Fatalf("Record-Route %q does not name %s", rr, wantHost)
	}
	// Node A is gone; the name now leads to node B.
	toTag := gosip.GenerateTagN(8)
	uas.send(respond(uas, got, 200, "OK", toTag), nodeB)
	ok := phone.recvResponse(200)
	d := &dialog{callID: "adv-1", fromTag: mustTag(inv.From().Params), toTag: toTag, from: inv.From().Address,
		to: inv.To().Address, cseq: 1, calleeCSeq: 100, callerContact: inv.Contact().Address, calleeContact: ok.Contact().Address}
	for _, h := range ok.GetHeaders("record-route") {
		d.routes = append(d.routes, h.(*gosip.RecordRouteHeader).Address)
	}
	phone.send(inDialog(phone, d, gosip.ACK, true), nodeB)
	ack := uas.recvRequest("ACK")
	phone.send(inDialog(phone, d, gosip.BYE, true), nodeB)
	bye := uas.recvRequest("BYE")
	for _, r := range []*gosip.Request{ack, bye} {
		if k := header(r, "X-CLB-Key"); k == "" || header(r, "X-CLB-Instance") != "inst1" {
			t.Errorf("%s through node B: X-CLB-Key %q, X-CLB-Instance %q", r.Method, k, header(r, "X-CLB-Instance"))
		}
		if rt := header(r, "Route"); rt != "" {
			t.Errorf("%s through node B kept clb's Route %q", r.Method, rt)
		}
	}
	uas.send(respond(uas, bye, 200, "OK", ""), nodeB)
	phone.recvResponse(200)
}

// TestAdvertisedLoopStillDetected: every node's Via names the same host,
// yet a request that passed another node is no loop there, and one that
// comes back to the node that forwarded it is (482): node A's instance is
// node B, whose instance is node A.
func TestAdvertisedLoopStillDetected(t *testing.T) {
	placeholder := []config.Instance{{Name: "next", Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{
		Transport: "udp", Host: "127.0.0.1", Port: 1}}}}
	a, b := twoNodes(t, "sip.clb.test", placeholder)
	point := func(srv *Server, to *Server) {
		addr := to.transport("udp").selves()[0].addr
		next := []config.Instance{{Name: "next", Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{
			Transport: "udp", Host: addr.Addr().String(), Port: int(addr.Port())}}}}
		if err := srv.proxy.bal.Update(next, loadfactor.DefaultParams(), time.Now()); err != nil {
			t.Fatal(err)
		}
		srv.SetInstances(next)
	}
	point(a, b)
	point(b, a)
	phone := newPeer(t, "phone", "udp", nil)
	nodeA := a.transport("udp").selves()[0].addr
	phone.send(newInvite(phone, nodeA, "alice", "adv-loop"), nodeA)
	phone.recvResponse(482)
	for _, n := range []struct {
		name               string
		srv                *Server
		forwarded, refused int
	}{{"A", a, 1, 1}, {"B", b, 1, 0}} {
		if f, r := sipRequests(t, n.srv.proxy.metrics); f != n.forwarded || r != n.refused {
			t.Errorf("node %s forwarded %d and refused %d, want %d and %d", n.name, f, r, n.forwarded, n.refused)
		}
	}
}
