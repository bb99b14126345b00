package instance

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"clb/policy"
)

// webrtcOffer is an offer as Chromium makes it for one audio track, cut
// down to what the answer is built from.
const webrtcOffer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
	"a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n" +
	"a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n"

// sipSocket is a UDP socket of the test's (clb's, a phone's) and the
// instance's SIP address.
func sipSocket(t *testing.T, in *Instance) (*net.UDPConn, *net.UDPAddr) {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	sip, err := net.ResolveUDPAddr("udp", strings.TrimPrefix(in.SIPAddr(), "udp://"))
	if err != nil {
		t.Fatal(err)
	}
	return conn, sip
}

// recvSIP reads the next SIP message on conn.
func recvSIP(t *testing.T, conn *net.UDPConn) gosip.Message {
	t.Helper()
	buf := make([]byte, 65535)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	m, err := gosip.ParseMessage(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// routeList is req's Route entries, as <URI> joined by commas.
func routeList(req *gosip.Request) string {
	var routes []string
	for _, h := range req.GetHeaders("Route") {
		routes = append(routes, "<"+h.(*gosip.RouteHeader).Address.String()+">")
	}
	return strings.Join(routes, ",")
}

// postAsync POSTs to url in the background, decoding the JSON answer into
// into; the channel gets the status once into is set (0: no answer).
func postAsync(url string, into any) <-chan int {
	done := make(chan int, 1)
	go func() {
		res, err := http.Post(url, "", nil)
		if err != nil {
			done <- 0
			return
		}
		defer res.Body.Close()
		_ = json.NewDecoder(res.Body).Decode(into)
		done <- res.StatusCode
	}()
	return done
}

// TestHangupAndWebRTCAnswer: the instance answers a WebRTC offer with an
// SDP answer a browser takes (ICE credentials, a DTLS fingerprint,
// setup:active, rtcp-mux, the offer's mid, codec and BUNDLE group), and
// POST /_clb/hangup makes it send the callee's BYE by the INVITE's
// Record-Route (Route set in order, the caller's Contact as target, the
// dialog's tags swapped), reporting the BYE's final status; the call is
// then gone, and a second hang-up of it is 404.
func TestHangupAndWebRTCAnswer(t *testing.T) {
	c := newCluster(t, "a")
	in := c.get("a")
	clb, sip := sipSocket(t, in)
	rr1 := fmt.Sprintf("<sip:%s;transport=udp;lr;bekey=k>", clb.LocalAddr())
	rr2 := "<sip:127.0.0.1:7443;transport=wss;lr;bekey=k;flow=T>"
	invite := fmt.Sprintf("INVITE sip:svc@example.com SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKw1\r\n"+
		"Record-Route: %s\r\nRecord-Route: %s\r\n"+
		"From: <sip:alice@example.com>;tag=ftag\r\nTo: <sip:svc@example.com>\r\nCall-ID: w1\r\nCSeq: 1 INVITE\r\n"+
		"Contact: <sip:x@df7jal23ls0d.invalid;transport=wss>\r\nMax-Forwards: 69\r\nX-CLB-Key: %s\r\nX-CLB-Instance: a\r\n"+
		"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		clb.LocalAddr(), rr1, rr2, policy.EscapeKey("k"), len(webrtcOffer), webrtcOffer)
	if _, err := clb.WriteToUDP([]byte(invite), sip); err != nil {
		t.Fatal(err)
	}
	var ok *gosip.Response
	for ok == nil {
		if res := recvSIP(t, clb).(*gosip.Response); res.StatusCode == 200 {
			ok = res
		}
	}
	answer := string(ok.Body())
	for _, want := range []string{"a=group:BUNDLE 0\r\n", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "a=ice-ufrag:", "a=ice-pwd:",
		"a=fingerprint:sha-256 ", "a=setup:active\r\n", "a=mid:0\r\n", "a=rtcp-mux\r\n", "a=rtpmap:111 opus/48000/2\r\n"} {
		if !strings.Contains(answer, want) {
			t.Errorf("the answer lacks %q:\n%s", want, answer)
		}
	}
	if ct := ok.GetHeader("Content-Type"); ct == nil || ct.Value() != "application/sdp" {
		t.Errorf("200 Content-Type %v", ct)
	}
	toTag, _ := ok.To().Params.Get("tag")

	var status map[string]int
	done := postAsync(in.HTTPAddr()+"/_clb/hangup?call-id=w1", &status)
	bye, isReq := recvSIP(t, clb).(*gosip.Request)
	if !isReq || bye.Method != gosip.BYE {
		t.Fatalf("want the instance's BYE, got %v", bye)
	}
	if got := bye.Recipient.String(); got != "sip:x@df7jal23ls0d.invalid;transport=wss" {
		t.Errorf("BYE to %s, want the caller's Contact", got)
	}
	if routes := routeList(bye); routes != rr1+","+rr2 {
		t.Errorf("BYE Route %v, want the Record-Route in order %s,%s", routes, rr1, rr2)
	}
	if tag, _ := bye.From().Params.Get("tag"); tag != toTag {
		t.Errorf("BYE From tag %s, want the 200's To tag %s", tag, toTag)
	}
	if tag, _ := bye.To().Params.Get("tag"); tag != "ftag" {
		t.Errorf("BYE To tag %s, want the caller's ftag", tag)
	}
	res := gosip.NewResponseFromRequest(bye, 200, "OK", nil)
	if _, err := clb.WriteToUDP([]byte(res.String()), sip); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 200 || status["w1"] != 200 {
		t.Fatalf("hang-up answered %d %v, want 200 {w1: 200}", code, status)
	}
	if res, err := http.Post(in.HTTPAddr()+"/_clb/hangup?call-id=w1", "", nil); err != nil || res.StatusCode != 404 {
		t.Fatalf("a second hang-up: %v %v, want 404", res, err)
	}
}

// TestSIPRegister: a REGISTER gets 200 listing the Contact with its expiry
// (the Contact's expires, else Expires, at most an hour).
func TestSIPRegister(t *testing.T) {
	c := newCluster(t, "a")
	in := c.get("a")
	conn, sip := sipSocket(t, in)
	reg := fmt.Sprintf("REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKr1\r\n"+
		"From: <sip:alice@example.com>;tag=r\r\nTo: <sip:alice@example.com>\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\n"+
		"Contact: <sip:abc@x.invalid;transport=ws>;+sip.ice;expires=7200\r\nExpires: 600\r\nMax-Forwards: 69\r\n"+
		"X-CLB-Key: %s\r\nX-CLB-Instance: a\r\nContent-Length: 0\r\n\r\n", conn.LocalAddr(), policy.EscapeKey("r"))
	if _, err := conn.WriteToUDP([]byte(reg), sip); err != nil {
		t.Fatal(err)
	}
	res, ok := recvSIP(t, conn).(*gosip.Response)
	if !ok || res.StatusCode != 200 {
		t.Fatalf("REGISTER answered %v", res)
	}
	ct := res.Contact()
	if ct == nil || ct.Address.User != "abc" {
		t.Fatalf("200 Contact %v, want the registered one", ct)
	}
	if e, _ := ct.Params.Get("expires"); e != "3600" {
		t.Errorf("Contact expires %s, want 3600 (asked 7200, at most an hour)", e)
	}
}
