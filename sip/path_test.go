package sip

import (
	"fmt"
	"strings"
	"testing"

	gosip "github.com/emiago/sipgo/sip"

	"clb/config"
)

// register builds a REGISTER from phone p to clb, with Supported given.
func register(p *peer, user, supported string) *gosip.Request {
	req := gosip.NewRequest(gosip.REGISTER, gosip.Uri{Scheme: "sip", Host: "example.com"})
	req.AppendHeader(&gosip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: strings.ToUpper(p.transport),
		Host: p.addr.Addr().String(), Port: int(p.addr.Port()), Params: gosip.HeaderParams{{K: "branch", V: gosip.GenerateBranch()}}})
	aor := gosip.Uri{Scheme: "sip", User: user, Host: "example.com"}
	req.AppendHeader(&gosip.FromHeader{Address: aor, Params: gosip.HeaderParams{{K: "tag", V: gosip.GenerateTagN(10)}}})
	req.AppendHeader(&gosip.ToHeader{Address: aor})
	cid := gosip.CallIDHeader(fmt.Sprintf("reg-%s-%s", user, gosip.GenerateTagN(8)))
	req.AppendHeader(&cid)
	req.AppendHeader(&gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.REGISTER})
	req.AppendHeader(&gosip.ContactHeader{Address: p.uri(user)})
	if supported != "" {
		req.AppendHeader(gosip.NewHeader("Supported", supported))
	}
	mf := gosip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetBody(nil)
	return req
}

// TestWSPath: a WebSocket phone that registers with Supported: path gets
// clb's Path entry in the REGISTER the registrar (an instance) receives,
// facing the instance, with the flow token of the phone's connection (one
// without it gets none). The instance then calls the phone by that Path:
// the INVITE reaches the phone over its WebSocket, Record-Routed twice
// (client-facing first, with the flow; dir=out and beroute the instance);
// the phone's 200 reaches the instance; the phone's BYE enters the cluster
// by the dialog's key; the instance's in-dialog request reaches the phone.
// A Path route from outside the cluster, or with a token altered, reaches
// nothing.
func TestWSPath(t *testing.T) {
	c := wsCluster(t, config.WS{}, false)
	phone := c.wsPhone("phone", "ws")

	phone.send(register(phone, "bob", "outbound"), c.ws)
	_, reg := c.recvAny("REGISTER")
	if ps := reg.GetHeaders("path"); len(ps) != 0 {
		t.Errorf("REGISTER without Supported: path got Path %v", ps)
	}
	phone.send(register(phone, "bob", "path, gruu, outbound"), c.ws)
	registrar, reg := c.recvAny("REGISTER")
	ps := reg.GetHeaders("path")
	if len(ps) != 1 {
		t.Fatalf("REGISTER with Supported: path at %s: Path %v, want one entry", registrar, ps)
	}
	path, err := parseURIValue(ps[0].Value())
	if err != nil {
		t.Fatalf("Path %q: %v", ps[0].Value(), err)
	}
	if path.Host != c.udp.Addr().String() || path.Port != int(c.udp.Port()) || !path.UriParams.Has("lr") || !path.UriParams.Has("ob") {
		t.Errorf("Path %s: want clb's UDP listener %v (facing the instance), lr and ob", path.String(), c.udp)
	}
	if tr, _ := path.UriParams.Get("transport"); tr != "udp" || !path.UriParams.Has(paramFlow) {
		t.Errorf("Path %s: want transport=udp and a flow token", path.String())
	}

	uas := c.instances[registrar]
	out := newInvite(uas, c.udp, "app", "to-browser-1")
	out.Recipient = phone.uri("bob")
	out.PrependHeader(&gosip.RouteHeader{Address: path})
	uas.send(out, c.udp)
	inv := phone.recvRequest("INVITE")
	if rs := inv.GetHeaders("route"); len(rs) != 0 {
		t.Errorf("INVITE at the phone still has Route %v", rs)
	}
	if v := inv.GetHeaders("via")[0].(*gosip.ViaHeader); !isClbVia(v) || v.Transport != "WS" {
		t.Errorf("INVITE at the phone: top Via %v, want clb's WS", v)
	}
	rrs := inv.GetHeaders("record-route")
	if len(rrs) != 2 {
		t.Fatalf("INVITE at the phone: %d Record-Route entries, want 2: %v", len(rrs), rrs)
	}
	client, inner := rrs[0].(*gosip.RecordRouteHeader).Address, rrs[1].(*gosip.RecordRouteHeader).Address
	if tr, _ := client.UriParams.Get("transport"); tr != "ws" || !client.UriParams.Has(paramFlow) || client.Port != int(c.ws.Port()) {
		t.Errorf("the top (client-facing) Record-Route %s: want clb's ws listener and a flow", client.String())
	}
	if tr, _ := inner.UriParams.Get("transport"); tr != "udp" || inner.UriParams.Has(paramFlow) {
		t.Errorf("the instance-facing Record-Route %s: want transport=udp and no flow", inner.String())
	}
	for _, u := range []gosip.Uri{client, inner} {
		if dir, _ := u.UriParams.Get(paramDir); dir != "out" {
			t.Errorf("Record-Route %s: want dir=out", u.String())
		}
		if r, _ := u.UriParams.Get(paramRoute); r != registrar {
			t.Errorf("Record-Route %s: want beroute=%s", u.String(), registrar)
		}
	}

	phone.send(respond(phone, inv, 200, "OK", "browser1"), c.ws)
	ok := uas.recvResponse(200)
	d := &dialog{callID: "to-browser-1", fromTag: mustTag(out.From().Params), toTag: "browser1",
		from: out.From().Address, to: out.To().Address, cseq: 1, calleeCSeq: 100,
		callerContact: out.Contact().Address, calleeContact: ok.Contact().Address}
	for _, h := range ok.GetHeaders("record-route") {
		d.routes = append([]gosip.Uri{h.(*gosip.RecordRouteHeader).Address}, d.routes...)
	}
	uas.send(inDialog(uas, d, gosip.ACK, true), c.udp)
	phone.recvRequest("ACK")

	// The instance's in-dialog request (caller's route set: the
	// Record-Route reversed) reaches the phone.
	uas.send(inDialog(uas, d, gosip.INFO, true), c.udp)
	info := phone.recvRequest("INFO")
	phone.send(respond(phone, info, 200, "OK", ""), c.ws)
	uas.recvResponse(200)

	// The phone hangs up: its BYE (route set the Record-Route in order)
	// enters the cluster by the dialog's key, sticky to the instance.
	phone.send(inDialog(phone, d, gosip.BYE, false), c.ws)
	at, bye := c.recvAny("BYE")
	c.expectRouted(bye, at, d.fromTag+d.callID, registrar)
	c.quiet()
	quietPeer(t, phone)

	// Each INVITE by the Path from sender, with the Path's token as tok,
	// gets 403 and reaches nothing.
	refused := func(sender *peer, callID, tok string) {
		t.Helper()
		route := path
		route.UriParams = path.UriParams.Clone()
		route.UriParams.Add(paramFlow, tok)
		inv := newInvite(sender, c.udp, "mallory", callID)
		inv.Recipient = phone.uri("bob")
		inv.PrependHeader(&gosip.RouteHeader{Address: route})
		sender.send(inv, c.udp)
		sender.recvResponse(403)
		quietPeer(t, phone)
	}
	tok, _ := path.UriParams.Get(paramFlow)
	refused(newPeer(t, "stranger", "udp", nil), "to-browser-2", tok) // from outside the cluster
	refused(uas, "to-browser-3", alterToken(tok, 2))                 // an altered token
}

// parseURIValue parses a name-addr field value such as Path's.
func parseURIValue(v string) (gosip.Uri, error) {
	var u gosip.Uri
	v = strings.TrimSpace(v)
	if i, j := strings.IndexByte(v, '<'), strings.LastIndexByte(v, '>'); i >= 0 && j > i {
		v = v[i+1 : j]
	}
	err := gosip.ParseUri(v, &u)
	return u, err
}
