package sip

import (
	"strconv"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"clb/balancer"
	"clb/config"
	"clb/policy"
)

func forTransports(t *testing.T, f func(t *testing.T, transport string)) {
	for _, tr := range []string{"udp", "tcp"} {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

// expectRouted checks what an instance received against the balancer: the
// X-CLB-* fields name it, the key and the replica partner.
func (c *cluster) expectRouted(req *gosip.Request, at, key, previous string) {
	c.t.Helper()
	d := c.bal.Table().RouteFor(balancer.SIP, key, previous, time.Now())
	want := map[string]string{
		"X-CLB-Key":      policy.EscapeKey(key),
		"X-CLB-Instance": d.Owner.Name,
		"X-CLB-Cluster":  d.Owner.ClusterName(),
		"X-CLB-Replica":  "",
		"X-CLB-Previous": "",
	}
	if d.Replica != nil {
		want["X-CLB-Replica"] = d.Replica.Name
	}
	if d.Previous != nil {
		want["X-CLB-Previous"] = d.Previous.Name
	}
	if at != d.Owner.Name {
		c.t.Errorf("%s %s went to %s; the owner of %q is %s", req.Method, req.CallID().Value(), at, key, d.Owner.Name)
	}
	for name, v := range want {
		if got := header(req, name); got != v {
			c.t.Errorf("%s at %s: %s %q, want %q", req.Method, at, name, got, v)
		}
		if n := len(req.GetHeaders(name)); v != "" && n != 1 {
			c.t.Errorf("%s at %s: %d %s fields", req.Method, at, n, name)
		}
	}
}

// isClbVia reports whether v is a Via clb added.
func isClbVia(v *gosip.ViaHeader) bool {
	b, _ := v.Params.Get("branch")
	return strings.HasPrefix(b, branchPrefix)
}

func TestDialog(t *testing.T) {
	forTransports(t, func(t *testing.T, transport string) {
		c := newCluster(t, clusterOptions{n: 3, transport: transport})
		phone := newPeer(t, "phone", transport, nil)
		d, inv := c.call(phone, "alice")
		key := d.fromTag + d.callID

		c.expectRouted(inv, d.instance, key, "")
		vias := inv.GetHeaders("via")
		if len(vias) != 2 || !isClbVia(vias[0].(*gosip.ViaHeader)) {
			t.Fatalf("INVITE at instance: Vias %v", vias)
		}
		if mf := inv.MaxForwards(); mf == nil || *mf != 69 {
			t.Errorf("Max-Forwards %v, want 69", mf)
		}
		rr := d.recordRouteLine
		for _, want := range []string{"lr", "bekey=" + policy.EscapeKey(key), "beroute=" + d.instance, "ftag=" + policy.EscapeKey(d.fromTag), "transport=" + transport} {
			if !strings.Contains(rr, want) {
				t.Errorf("Record-Route %s lacks %s", rr, want)
			}
		}
		if len(d.routes) != 1 || d.routes[0].Port != int(c.clb(transport).Port()) {
			t.Fatalf("route set %v, want clb's one Route", d.routes)
		}

		// BYE from the caller: into the cluster by bekey, to the same
		// instance, without clb's Route, with the X-CLB-* fields.
		phone.send(inDialog(phone, d, gosip.BYE, true), c.clb(transport))
		bye := c.instances[d.instance].recvRequest("BYE")
		c.expectRouted(bye, d.instance, key, d.instance)
		if len(bye.GetHeaders("route")) != 0 {
			t.Errorf("BYE at instance still has Route %v", bye.GetHeaders("route"))
		}
		uas := c.instances[d.instance]
		uas.send(respond(uas, bye, 200, "OK", ""), c.clb(transport))
		ok := phone.recvResponse(200)
		if vias := ok.GetHeaders("via"); len(vias) != 1 || isClbVia(vias[0].(*gosip.ViaHeader)) {
			t.Errorf("200 at phone: Vias %v", vias)
		}
		c.quiet()
	})
}

// TestCalleeBye: a BYE from the instance leaves the cluster by the caller's
// Contact and carries no X-CLB-* fields; its 200 comes back to the instance.
func TestCalleeBye(t *testing.T) {
	forTransports(t, func(t *testing.T, transport string) {
		c := newCluster(t, clusterOptions{n: 3, transport: transport})
		phone := newPeer(t, "phone", transport, nil)
		d, _ := c.call(phone, "bob")
		uas := c.instances[d.instance]
		uas.send(inDialog(uas, d, gosip.BYE, false), c.clb(transport))
		bye := phone.recvRequest("BYE")
		for _, h := range []string{"X-CLB-Key", "X-CLB-Instance", "X-CLB-Replica", "Route"} {
			if v := header(bye, h); v != "" {
				t.Errorf("BYE leaving the cluster has %s: %s", h, v)
			}
		}
		phone.send(respond(phone, bye, 200, "OK", ""), c.clb(transport))
		uas.recvResponse(200)
		c.quiet()
	})
}

// TestReInviteBothSides: a re-INVITE from the caller reaches the instance, one
// from the instance reaches the caller, and their answers come back.
func TestReInviteBothSides(t *testing.T) {
	forTransports(t, func(t *testing.T, transport string) {
		c := newCluster(t, clusterOptions{n: 3, transport: transport})
		phone := newPeer(t, "phone", transport, nil)
		d, _ := c.call(phone, "carol")
		uas := c.instances[d.instance]
		clb := c.clb(transport)

		phone.send(inDialog(phone, d, gosip.INVITE, true), clb)
		re := uas.recvRequest("INVITE")
		c.expectRouted(re, d.instance, d.fromTag+d.callID, d.instance)
		uas.send(respond(uas, re, 200, "OK", ""), clb)
		phone.recvResponse(200)
		phone.send(inDialog(phone, d, gosip.ACK, true), clb)
		uas.recvRequest("ACK")

		uas.send(inDialog(uas, d, gosip.INVITE, false), clb)
		re = phone.recvRequest("INVITE")
		phone.send(respond(phone, re, 200, "OK", ""), clb)
		uas.recvResponse(200)
		ack := inDialog(uas, d, gosip.ACK, false)
		uas.send(ack, clb)
		phone.recvRequest("ACK")
		c.quiet()
	})
}

// TestCancel: CANCEL and the ACK of the 487 reach the INVITE's instance
// with the INVITE's branch, so the instance matches them to its transaction.
func TestCancel(t *testing.T) {
	forTransports(t, func(t *testing.T, transport string) {
		c := newCluster(t, clusterOptions{n: 3, transport: transport})
		phone := newPeer(t, "phone", transport, nil)
		clb := c.clb(transport)
		inv := newInvite(phone, clb, "dave", "cancel-"+gosip.GenerateTagN(6))
		phone.send(inv, clb)
		name, got := c.recvAny("INVITE")
		uas := c.instances[name]
		uas.send(respond(uas, got, 180, "Ringing", "t1"), clb)
		phone.recvResponse(180)

		cancel := inv.Clone()
		cancel.Method = gosip.CANCEL
		cancel.CSeq().MethodName = gosip.CANCEL
		cancel.RemoveHeader("Contact")
		phone.send(cancel, clb)
		gotCancel := uas.recvRequest("CANCEL")
		branch := func(r *gosip.Request) string { b, _ := r.Via().Params.Get("branch"); return b }
		if branch(gotCancel) != branch(got) {
			t.Errorf("CANCEL branch %s, INVITE branch %s", branch(gotCancel), branch(got))
		}
		uas.send(respond(uas, gotCancel, 200, "OK", "t1"), clb)
		phone.recvResponse(200)
		uas.send(respond(uas, got, 487, "Request Terminated", "t1"), clb)
		final := phone.recvResponse(487)

		ack := inv.Clone()
		ack.Method = gosip.ACK
		ack.CSeq().MethodName = gosip.ACK
		ack.RemoveHeader("Contact")
		ack.RemoveHeader("To")
		ack.AppendHeader(gosip.HeaderClone(final.To()))
		phone.send(ack, clb)
		gotAck := uas.recvRequest("ACK")
		if branch(gotAck) != branch(got) {
			t.Errorf("ACK branch %s, INVITE branch %s", branch(gotAck), branch(got))
		}
		c.quiet()
	})
}

// TestRuleKey: with a rule on the From user, the key is the user, the same
// for every request of the dialog, and the X-CLB-Key says so.
func TestRuleKey(t *testing.T) {
	rules := []config.Rule{{Header: "From", URIUser: true, Prefix: "user:"}}
	c := newCluster(t, clusterOptions{n: 5, rules: rules})
	phone := newPeer(t, "phone", "udp", nil)
	d, inv := c.call(phone, "erin")
	c.expectRouted(inv, d.instance, "user:erin", "")
	for _, m := range []gosip.RequestMethod{gosip.INFO, gosip.BYE} {
		phone.send(inDialog(phone, d, m, true), c.udp)
		got := c.instances[d.instance].recvRequest(string(m))
		c.expectRouted(got, d.instance, "user:erin", d.instance)
		uas := c.instances[d.instance]
		uas.send(respond(uas, got, 200, "OK", ""), c.udp)
		phone.recvResponse(200)
	}
	// Another call of the same user lands on the same instance.
	d2, _ := c.call(phone, "erin")
	if d2.instance != d.instance {
		t.Errorf("second call of erin went to %s, first to %s", d2.instance, d.instance)
	}
}

// TestFailover: when the instance of a dialog is down, its in-dialog
// requests go to the replica partner, which is told the previous instance.
func TestFailover(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 4})
	phone := newPeer(t, "phone", "udp", nil)
	d, inv := c.call(phone, "frank")
	replica := header(inv, "X-CLB-Replica")
	if err := c.bal.SetHealth(d.instance, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	phone.send(inDialog(phone, d, gosip.BYE, true), c.udp)
	bye := c.instances[replica].recvRequest("BYE")
	if got := header(bye, "X-CLB-Previous"); got != d.instance {
		t.Errorf("X-CLB-Previous %q, want %s", got, d.instance)
	}
	c.expectRouted(bye, replica, d.fromTag+d.callID, d.instance)
}

// TestSpoofedCLBFields: X-CLB-* fields a client sends never reach an
// instance.
func TestSpoofedCLBFields(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3})
	phone := newPeer(t, "phone", "udp", nil)
	inv := newInvite(phone, c.udp, "mallory", "spoof-1")
	inv.AppendHeader(gosip.NewHeader("X-CLB-Replica", "evil"))
	inv.AppendHeader(gosip.NewHeader("x-clb-previous", "evil"))
	inv.AppendHeader(gosip.NewHeader("X-CLB-Key", "evil"))
	phone.send(inv, c.udp)
	name, got := c.recvAny("INVITE")
	c.expectRouted(got, name, mustTag(inv.From().Params)+"spoof-1", "")
	for _, h := range []string{"X-CLB-Replica", "X-CLB-Previous", "X-CLB-Key"} {
		for _, v := range got.GetHeaders(h) {
			if v.Value() == "evil" {
				t.Errorf("the client's %s reached the instance", h)
			}
		}
	}
}

// TestKeyEscaping: a key with characters that mean something in SIP is
// percent-encoded in X-CLB-Key and bekey, and the dialog still routes by it.
func TestKeyEscaping(t *testing.T) {
	rules := []config.Rule{{Header: "X-Session", Prefix: "s:"}}
	c := newCluster(t, clusterOptions{n: 3, rules: rules})
	phone := newPeer(t, "phone", "udp", nil)
	key := `a;b=c>,"d e"%`
	inv := newInvite(phone, c.udp, "gus", "esc-1")
	inv.AppendHeader(gosip.NewHeader("X-Session", key))
	phone.send(inv, c.udp)
	name, got := c.recvAny("INVITE")
	c.expectRouted(got, name, "s:"+key, "")
	if rr := header(got, "Record-Route"); !strings.Contains(rr, "bekey="+policy.EscapeKey("s:"+key)+";") {
		t.Errorf("Record-Route %s", rr)
	}
}

// TestLocalAnswers: what clb answers itself, and that it never forwards.
func TestLocalAnswers(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 2})
	phone := newPeer(t, "phone", "udp", nil)

	inv := newInvite(phone, c.udp, "hank", "mf0")
	mf := gosip.MaxForwardsHeader(0)
	inv.ReplaceHeader(&mf)
	phone.send(inv, c.udp)
	phone.recvResponse(483)

	loop := newInvite(phone, c.udp, "hank", "loop")
	loop.AppendHeader(&gosip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
		Host: c.udp.Addr().String(), Port: int(c.udp.Port()), Params: gosip.HeaderParams{{K: "branch", V: branchPrefix + "abc"}}})
	phone.send(loop, c.udp)
	phone.recvResponse(482)

	ext := newInvite(phone, c.udp, "hank", "ext")
	ext.AppendHeader(gosip.NewHeader("Proxy-Require", "foo"))
	phone.send(ext, c.udp)
	if r := phone.recvResponse(420); header(r, "Unsupported") != "foo" {
		t.Errorf("420 without Unsupported: foo:\n%s", r)
	}

	for _, n := range []string{"inst1", "inst2"} {
		if err := c.bal.Disable(n, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	phone.send(newInvite(phone, c.udp, "hank", "down"), c.udp)
	r := phone.recvResponse(503)
	if ra, err := strconv.Atoi(header(r, "Retry-After")); err != nil || ra <= 0 {
		t.Errorf("503 Retry-After %q", header(r, "Retry-After"))
	}
	if tag := mustTag(r.To().Params); tag == "" {
		t.Error("503 without a To tag")
	}
	c.quiet()
}

// TestOutboundFromInstance: a request an instance starts goes out by its
// Request-URI, Record-Routed with dir=out; the far end's in-dialog requests
// then come into the cluster by the key.
func TestOutboundFromInstance(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3})
	phone := newPeer(t, "phone", "udp", nil)
	uas := c.instances["inst2"]
	out := newInvite(uas, c.udp, "app", "outbound-1")
	out.Recipient = phone.uri("phone")
	uas.send(out, c.udp)
	got := phone.recvRequest("INVITE")
	rr := header(got, "Record-Route")
	if !strings.Contains(rr, "dir=out") || !strings.Contains(rr, "beroute=inst2") {
		t.Fatalf("Record-Route of an outbound INVITE: %s", rr)
	}
	if header(got, "X-CLB-Key") != "" {
		t.Error("X-CLB-Key on a request leaving the cluster")
	}
	toTag := "far1"
	phone.send(respond(phone, got, 200, "OK", toTag), c.udp)
	ok := uas.recvResponse(200)

	// The far end hangs up: its BYE enters the cluster by the key.
	var rrURI gosip.Uri
	for _, h := range got.GetHeaders("record-route") {
		rrURI = h.(*gosip.RecordRouteHeader).Address
	}
	d := &dialog{callID: "outbound-1", fromTag: toTag, toTag: mustTag(out.From().Params),
		from: got.To().Address, to: got.From().Address, routes: []gosip.Uri{rrURI},
		calleeContact: out.Contact().Address, cseq: 10}
	if ok.To() == nil {
		t.Fatal("200 without To")
	}
	phone.send(inDialog(phone, d, gosip.BYE, true), c.udp)
	name, bye := c.recvAny("BYE")
	c.expectRouted(bye, name, mustTag(out.From().Params)+"outbound-1", "inst2")
}

// TestResponseNotOurs: a response whose top Via is not clb's goes nowhere.
func TestResponseNotOurs(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 2, readers: 1})
	phone := newPeer(t, "phone", "udp", nil)
	res := gosip.NewResponse(200, "OK")
	res.AppendHeader(&gosip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
		Host: "127.0.0.1", Port: int(c.instances["inst1"].addr.Port()), Params: gosip.HeaderParams{{K: "branch", V: "z9hG4bKx"}}})
	res.AppendHeader(&gosip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
		Host: "127.0.0.1", Port: int(phone.addr.Port()), Params: gosip.HeaderParams{{K: "branch", V: "z9hG4bKy"}}})
	phone.send(res, c.udp)
	// With one reader, clb handles messages in order: once the probe is
	// answered, the response was handled, and nothing came of it.
	probe := newInvite(phone, c.udp, "probe", "probe-1")
	mf := gosip.MaxForwardsHeader(0)
	probe.ReplaceHeader(&mf)
	phone.send(probe, c.udp)
	phone.recvResponse(483)
	c.quiet()
}

func TestServerRefusesNamedListener(t *testing.T) {
	_, err := NewServer(ServerOptions{Listen: []config.SIPAddr{{Endpoint: config.Endpoint{Transport: "udp", Host: "localhost"}}}})
	if err == nil {
		t.Fatal("a listener on a name was accepted")
	}
}
