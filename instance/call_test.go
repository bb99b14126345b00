package instance

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	gosip "github.com/emiago/sipgo/sip"

	"clb/policy"
)

// TestCallRegistered: a REGISTER with a Path (as clb puts in a browser
// phone's) gets a 200 that echoes the Path, and POST /_clb/call then calls
// that address of record by it: an INVITE to the registered Contact, with
// the Path as its Route, sent to the Path's host, carrying a WebRTC offer
// (ICE credentials, a DTLS fingerprint, a=setup:actpass); after a 180 and
// a 200 with a double Record-Route, the ACK follows the 200's Record-Route
// reversed and the call reports 200. The callee's BYE, routed by the
// dialog's key (From tag and Call-ID), is answered 200, and the call is
// gone. A call to an address of record not registered is 404.
func TestCallRegistered(t *testing.T) {
	c := newCluster(t, "a")
	in := c.get("a")
	clb, sip := sipSocket(t, in)
	path := fmt.Sprintf("<sip:%s;transport=udp;lr;ob;flow=TOKEN>", clb.LocalAddr())
	reg := fmt.Sprintf("REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKp1\r\n"+
		"Path: %s\r\nFrom: <sip:bob@example.com>;tag=r\r\nTo: <sip:bob@example.com>\r\nCall-ID: p1\r\nCSeq: 1 REGISTER\r\n"+
		"Contact: <sip:b0b@x.invalid;transport=ws>;expires=600\r\nSupported: path, outbound\r\nMax-Forwards: 69\r\n"+
		"X-CLB-Key: %s\r\nX-CLB-Instance: a\r\nContent-Length: 0\r\n\r\n", clb.LocalAddr(), path, policy.EscapeKey("r"))
	if _, err := clb.WriteToUDP([]byte(reg), sip); err != nil {
		t.Fatal(err)
	}
	res, ok := recvSIP(t, clb).(*gosip.Response)
	if !ok || res.StatusCode != 200 {
		t.Fatalf("REGISTER answered %v", res)
	}
	if p := res.GetHeader("Path"); p == nil || p.Value() != path {
		t.Errorf("200 to REGISTER: Path %v, want %s", p, path)
	}

	if r, err := http.Post(in.HTTPAddr()+"/_clb/call?aor="+url.QueryEscape("sip:carol@example.com"), "", nil); err != nil || r.StatusCode != 404 {
		t.Fatalf("a call to an address of record not registered: %v %v, want 404", r, err)
	}

	var answer map[string]any
	done := postAsync(in.HTTPAddr()+"/_clb/call?aor="+url.QueryEscape("sip:bob@example.com"), &answer)
	inv, isReq := recvSIP(t, clb).(*gosip.Request)
	if !isReq || inv.Method != gosip.INVITE {
		t.Fatalf("want the instance's INVITE, got %v", inv)
	}
	if got := inv.Recipient.String(); got != "sip:b0b@x.invalid;transport=ws" {
		t.Errorf("INVITE to %s, want the registered Contact", got)
	}
	if rt := inv.GetHeader("Route"); rt == nil || "<"+rt.(*gosip.RouteHeader).Address.String()+">" != path {
		t.Errorf("INVITE Route %v, want the Path %s", rt, path)
	}
	offer := string(inv.Body())
	for _, want := range []string{"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:sha-256 ",
		"a=setup:actpass\r\n", "a=mid:0\r\n", "a=rtcp-mux\r\n"} {
		if !strings.Contains(offer, want) {
			t.Errorf("the offer lacks %q:\n%s", want, offer)
		}
	}
	if _, ok := webrtcAnswer(inv.Body()); !ok {
		t.Errorf("the offer is not one a WebRTC answer can be made for:\n%s", offer)
	}
	rr1 := "<sip:127.0.0.1:7443;transport=wss;lr;bekey=k;flow=T;dir=out>"
	rr2 := fmt.Sprintf("<sip:%s;transport=udp;lr;bekey=k;dir=out>", clb.LocalAddr())
	for _, code := range []int{180, 200} {
		r := gosip.NewResponseFromRequest(inv, code, "", nil)
		r.To().Params.Remove("tag")
		r.To().Params.Add("tag", "browser")
		if code == 200 {
			r.AppendHeader(gosip.NewHeader("Record-Route", rr1))
			r.AppendHeader(gosip.NewHeader("Record-Route", rr2))
			r.AppendHeader(gosip.NewHeader("Contact", "<sip:b0b@x.invalid;transport=ws>"))
		}
		if _, err := clb.WriteToUDP([]byte(r.String()), sip); err != nil {
			t.Fatal(err)
		}
	}
	ack, isReq := recvSIP(t, clb).(*gosip.Request)
	if !isReq || ack.Method != gosip.ACK {
		t.Fatalf("want the ACK of the 200, got %v", ack)
	}
	if routes := routeList(ack); routes != rr2+","+rr1 {
		t.Errorf("ACK Route %v, want the Record-Route reversed %s,%s", routes, rr2, rr1)
	}
	if tag, _ := ack.To().Params.Get("tag"); tag != "browser" {
		t.Errorf("ACK To tag %q, want the 200's", tag)
	}
	if code := <-done; code != 200 || answer["status"] != float64(200) {
		t.Fatalf("call answered %d %v, want 200 with status 200", code, answer)
	}
	callID, _ := answer["call_id"].(string)
	if calls := in.Calls(); len(calls) != 1 || calls[0] != callID {
		t.Fatalf("the instance's calls %v, want %s", calls, callID)
	}

	fromTag, _ := inv.From().Params.Get("tag")
	bye := fmt.Sprintf("BYE sip:a@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKb1\r\n"+
		"From: <sip:bob@example.com>;tag=browser\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 7 BYE\r\nMax-Forwards: 69\r\n"+
		"X-CLB-Key: %s\r\nX-CLB-Instance: a\r\nContent-Length: 0\r\n\r\n",
		strings.TrimPrefix(in.SIPAddr(), "udp://"), clb.LocalAddr(), inv.From().Value(), callID, policy.EscapeKey(fromTag+callID))
	if _, err := clb.WriteToUDP([]byte(bye), sip); err != nil {
		t.Fatal(err)
	}
	if res, ok := recvSIP(t, clb).(*gosip.Response); !ok || res.StatusCode != 200 {
		t.Fatalf("the callee's BYE answered %v, want 200", res)
	}
	if calls := in.Calls(); len(calls) != 0 {
		t.Errorf("the instance's calls %v after the callee's BYE, want none", calls)
	}
}
