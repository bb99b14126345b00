package sip

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"clb/config"
)

// options is an OPTIONS request from p through clb, its Call-ID naming it.
func options(p *peer, clb netip.AddrPort, callID, userAgent string) *gosip.Request {
	req := gosip.NewRequest(gosip.OPTIONS, gosip.Uri{Scheme: "sip", User: "service", Host: clb.Addr().String(), Port: int(clb.Port())})
	req.AppendHeader(&gosip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
		Host: p.addr.Addr().String(), Port: int(p.addr.Port()), Params: gosip.HeaderParams{{K: "branch", V: gosip.GenerateBranch()}}})
	req.AppendHeader(&gosip.FromHeader{Address: gosip.Uri{Scheme: "sip", User: p.name, Host: "example.com"},
		Params: gosip.HeaderParams{{K: "tag", V: gosip.GenerateTagN(10)}}})
	req.AppendHeader(&gosip.ToHeader{Address: gosip.Uri{Scheme: "sip", User: "service", Host: "example.com"}})
	cid := gosip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.OPTIONS})
	mf := gosip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	if userAgent != "" {
		req.AppendHeader(gosip.NewHeader("User-Agent", userAgent))
	}
	req.SetBody(nil)
	return req
}

// forwarded drains what reached the instance up to the marker Call-ID and
// counts the requests by Call-ID prefix. With one instance, and clb reading
// with one goroutine, everything sent before the marker arrives before it.
func (c *cluster) forwarded(marker string) map[string]int {
	c.t.Helper()
	got := map[string]int{}
	for {
		_, req := c.recvAnyRequest()
		id := req.CallID().Value()
		if id == marker {
			return got
		}
		prefix, _, _ := strings.Cut(id, "#")
		got[prefix]++
	}
}

func (c *cluster) recvAnyRequest() (string, *gosip.Request) {
	c.t.Helper()
	select {
	case e := <-c.inbox:
		req, ok := e.msg.(*gosip.Request)
		if !ok {
			c.t.Fatalf("%s: want a request, got:\n%s", e.at, e.raw)
		}
		return e.at, req
	case <-time.After(wait):
		c.t.Fatalf("no request at any instance within %v", wait)
		return "", nil
	}
}

// answers counts the 503s p has received, each with a Retry-After. To know
// that all have come, it ends with a request clb answers at once whatever
// the rate (Max-Forwards 0: 483), which comes after them on p's socket.
func answers(t *testing.T, c *cluster, p *peer) int {
	t.Helper()
	flush := options(p, c.clb("udp"), "flush", "")
	mf := gosip.MaxForwardsHeader(0)
	flush.ReplaceHeader(&mf)
	p.send(flush, c.clb("udp"))
	n := 0
	for {
		res, ok := p.recv().(*gosip.Response)
		switch {
		case ok && res.StatusCode == 483:
			return n
		case !ok || res.StatusCode != 503:
			t.Fatalf("%s: want 503, got:\n%s", p.name, res)
		}
		if ra, err := strconv.Atoi(header(res, "Retry-After")); err != nil || ra < 1 {
			t.Errorf("503 with Retry-After %q", header(res, "Retry-After"))
		}
		n++
	}
}

// TestFloodControl: a source over its SIP rate gets 503 with Retry-After
// (an ACK over it is dropped unanswered) while other sources go on; a
// source inside a dialog is let through up to twice the rate; the rate
// refills with time; exempt sources are never limited; known scanners are
// dropped unanswered (SPEC section 12). The clock is the test's.
func TestFloodControl(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	exempt, _ := netip.ParsePrefix("127.0.0.9/32")
	c := newCluster(t, clusterOptions{n: 1, readers: 1, now: clock, limits: config.Limits{
		SIP:    config.SIPLimits{Rate: 2, Burst: 3, DropScanners: true},
		Exempt: []config.Prefix{{Prefix: exempt}},
	}})
	flooder := newPeerAt(t, "flooder", "udp", "127.0.0.1", nil)
	other := newPeerAt(t, "other", "udp", "127.0.0.2", nil)
	scanner := newPeerAt(t, "scanner", "udp", "127.0.0.4", nil)
	trunk := newPeerAt(t, "trunk", "udp", "127.0.0.9", nil)
	marker := newPeerAt(t, "marker", "udp", "127.0.0.5", nil)
	clb := c.clb("udp")
	mark := func(id string) map[string]int {
		marker.send(options(marker, clb, id, ""), clb)
		return c.forwarded(id)
	}

	for i := range 10 {
		flooder.send(options(flooder, clb, fmt.Sprintf("flood#%d", i), ""), clb)
		trunk.send(options(trunk, clb, fmt.Sprintf("trunk#%d", i), ""), clb)
		scanner.send(options(scanner, clb, fmt.Sprintf("scan#%d", i), "friendly-scanner"), clb)
	}
	other.send(options(other, clb, "other#1", ""), clb)
	got := mark("mark-1")
	if got["flood"] != 3 || got["trunk"] != 10 || got["other"] != 1 || got["scan"] != 0 {
		t.Errorf("forwarded %v, want flood 3 (its burst), trunk 10 (exempt), other 1, scan 0", got)
	}
	if n := answers(t, c, flooder); n != 7 {
		t.Errorf("flooder got %d answers, want 7 503s", n)
	}
	if n := answers(t, c, scanner) + answers(t, c, trunk) + answers(t, c, other); n != 0 {
		t.Errorf("scanner, trunk and other got %d answers, want none", n)
	}

	// An ACK over the rate is dropped, not answered.
	ack := options(flooder, clb, "flood#ack", "")
	ack.Method = gosip.ACK
	ack.CSeq().MethodName = gosip.ACK
	flooder.send(ack, clb)
	if got := mark("mark-2"); got["flood"] != 0 {
		t.Errorf("an ACK over the rate was forwarded: %v", got)
	}
	if n := answers(t, c, flooder); n != 0 {
		t.Errorf("an ACK over the rate got %d answers", n)
	}

	// A second later the bucket has 2 more.
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	for i := range 4 {
		flooder.send(options(flooder, clb, fmt.Sprintf("flood#late%d", i), ""), clb)
	}
	if got := mark("mark-3"); got["flood"] != 2 {
		t.Errorf("after a second %d forwarded, want 2 (the rate)", got["flood"])
	}
	if n := answers(t, c, flooder); n != 2 {
		t.Errorf("after a second %d answered, want 2", n)
	}
}

// TestFloodControlLetsDialogsOn: inside a dialog (clb's Route on top) a
// source's requests count against its rate but pass up to twice it, where
// its new requests are already refused: a flood cannot end calls set up.
func TestFloodControlLetsDialogsOn(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	c := newCluster(t, clusterOptions{n: 1, readers: 1, now: func() time.Time { return now }, limits: config.Limits{
		SIP: config.SIPLimits{Rate: 2, Burst: 3},
	}})
	phone := newPeerAt(t, "phone", "udp", "127.0.0.3", nil)
	marker := newPeerAt(t, "marker", "udp", "127.0.0.5", nil)
	clb := c.clb("udp")
	d, _ := c.call(phone, "alice") // INVITE and ACK: 2 of the burst of 3
	for range 12 {
		phone.send(inDialog(phone, d, gosip.INFO, true), clb)
	}
	for i := range 3 {
		phone.send(options(phone, clb, fmt.Sprintf("new#%d", i), ""), clb)
	}
	marker.send(options(marker, clb, "mark", ""), clb)
	got := c.forwarded("mark")
	// The bucket had 1 token left, the dialog allowance (twice the burst)
	// 5 after the ACK: 5 INFOs pass, and no new request.
	if got[d.callID] != 5 || got["new"] != 0 {
		t.Errorf("forwarded %d INFOs and %d new requests, want 5 and 0", got[d.callID], got["new"])
	}
	if n := answers(t, c, phone); n != 7+3 {
		t.Errorf("phone got %d 503s, want 10", n)
	}
}
