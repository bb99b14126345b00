package sip

import (
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"clb/accesslog"
	"clb/accesslog/accesslogtest"
	"clb/balancer"
)

func accessLines(t *testing.T) (*accesslog.Log, <-chan map[string]any) { return accesslogtest.Lines(t) }

// expectLine waits for the next line and checks its fields.
func expectLine(t *testing.T, lines <-chan map[string]any, want map[string]any) {
	t.Helper()
	accesslogtest.Expect(t, accesslogtest.Next(t, lines, wait), "sip", accesslog.MsgSIP, want)
}

// TestAccessLogSIP: a line per request clb forwards (with the key, the
// instance and its replica partner) or answers itself (with the code: 483,
// and a 503 with the key it found no instance for); none for responses.
func TestAccessLogSIP(t *testing.T) {
	access, lines := accessLines(t)
	c := newCluster(t, clusterOptions{n: 3, access: access})
	phone := newPeer(t, "phone", "udp", nil)
	client := phone.addr.String()

	d, _ := c.call(phone, "alice")
	key := d.fromTag + d.callID
	dec := c.bal.Table().RouteFor(balancer.SIP, key, "", time.Now())
	if dec.Owner.Name != d.instance {
		t.Fatalf("the INVITE went to %s, the owner is %s", d.instance, dec.Owner.Name)
	}
	for _, method := range []string{"INVITE", "ACK"} {
		expectLine(t, lines, map[string]any{"method": method, "call_id": d.callID, "key": key, "instance": d.instance,
			"replica": dec.Replica.Name, "previous": "", "outcome": "forwarded", "status": "", "transport": "udp",
			"client": client})
	}

	// The instance's BYE leaves the cluster: outward, with the dialog's key.
	uas := c.instances[d.instance]
	uas.send(inDialog(uas, d, gosip.BYE, false), c.udp)
	phone.recvRequest("BYE")
	expectLine(t, lines, map[string]any{"method": "BYE", "call_id": d.callID, "key": key, "instance": "",
		"outcome": "outward", "client": uas.addr.String()})

	inv := newInvite(phone, c.udp, "hank", "mf0")
	mf := gosip.MaxForwardsHeader(0)
	inv.ReplaceHeader(&mf)
	phone.send(inv, c.udp)
	phone.recvResponse(483)
	expectLine(t, lines, map[string]any{"method": "INVITE", "call_id": "mf0", "key": "", "status": 483.0,
		"outcome": "max_forwards", "client": client})

	for _, n := range c.names {
		if err := c.bal.Disable(n, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	down := newInvite(phone, c.udp, "hank", "down")
	phone.send(down, c.udp)
	phone.recvResponse(503)
	expectLine(t, lines, map[string]any{"method": "INVITE", "call_id": "down", "key": mustTag(down.From().Params) + "down",
		"instance": "", "status": 503.0, "outcome": "no_instance"})

	select {
	case e := <-lines:
		t.Errorf("an unexpected line: %v", e)
	default:
	}
}
