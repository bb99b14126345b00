package instance

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

// answered is a dialog the UAS answered, as much as it needs to end it
// itself (a callee's BYE) and to answer its INVITE again.
type answered struct {
	hd     headers
	callID string
	answer []byte // the SDP of the 200, nil for none
	target gosip.Uri
	routes []gosip.Uri      // the INVITE's Record-Route, in order: the callee's route set
	local  gosip.ToHeader   // the INVITE's To with the UAS's tag: the BYE's From
	remote gosip.FromHeader // the INVITE's From: the BYE's To
	cseq   uint32
	// ack and ackTo, for a call the UAS placed, are the ACK of its 200
	// and where it went: sent again if the 200 is.
	ack   []byte
	ackTo *net.UDPAddr
}

// maxAnswered bounds the dialogs the UAS remembers for hanging up; past
// it, a dialog can still be ended by the caller, not by the instance.
const maxAnswered = 10_000

// errUnknownCall is a hang-up of a call the UAS does not have.
var errUnknownCall = errors.New("no such call")

func (u *uas) remember(req *gosip.Request, hd headers, tag string, answer []byte) {
	a := &answered{hd: hd, callID: req.CallID().Value(), answer: answer, remote: *req.From(), local: *req.To(), cseq: 1}
	a.remote.Address, a.remote.Params = *a.remote.Address.Clone(), a.remote.Params.Clone()
	a.local.Address, a.local.Params = *a.local.Address.Clone(), a.local.Params.Clone()
	if c := req.Contact(); c != nil {
		a.target = *c.Address.Clone()
	} else {
		a.target = *req.From().Address.Clone()
	}
	for _, h := range req.GetHeaders("Record-Route") {
		if rr, ok := h.(*gosip.RecordRouteHeader); ok {
			a.routes = append(a.routes, *rr.Address.Clone())
		}
	}
	a.local.Params.Remove("tag")
	a.local.Params.Add("tag", tag)
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.answered) < maxAnswered || u.answered[a.callID] != nil {
		u.answered[a.callID] = a
	}
}

func (u *uas) forget(callID string) {
	u.mu.Lock()
	delete(u.answered, callID)
	u.mu.Unlock()
}

func (u *uas) dialog(callID string) *answered {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.answered[callID]
}

// calls are the Call-IDs of the dialogs the UAS can hang up.
func (u *uas) calls() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	ids := make([]string, 0, len(u.answered))
	for id := range u.answered {
		ids = append(ids, id)
	}
	return ids
}

// hangup ends a dialog from the callee's side: a BYE by its route set (to
// the first Route, clb, over UDP), sent again on the RFC 3261 timer until a
// final response or ctx's end. It returns the final status.
func (u *uas) hangup(ctx context.Context, callID string) (int, error) {
	u.mu.Lock()
	a := u.answered[callID]
	if a != nil {
		a.cseq++
	}
	u.mu.Unlock()
	if a == nil {
		return 0, errUnknownCall
	}
	next := a.target
	if len(a.routes) > 0 {
		next = a.routes[0]
	}
	dst, err := udpHop(next)
	if err != nil {
		return 0, err
	}

	branch := gosip.GenerateBranch()
	bye := gosip.NewRequest(gosip.BYE, a.target)
	u.via(bye, branch)
	for _, r := range a.routes {
		bye.AppendHeader(&gosip.RouteHeader{Address: r})
	}
	bye.AppendHeader(&gosip.FromHeader{DisplayName: a.local.DisplayName, Address: a.local.Address, Params: a.local.Params})
	bye.AppendHeader(&gosip.ToHeader{DisplayName: a.remote.DisplayName, Address: a.remote.Address, Params: a.remote.Params})
	cid := gosip.CallIDHeader(callID)
	bye.AppendHeader(&cid)
	bye.AppendHeader(&gosip.CSeqHeader{SeqNo: a.cseq, MethodName: gosip.BYE})
	mf := gosip.MaxForwardsHeader(70)
	bye.AppendHeader(&mf)
	bye.SetBody(nil)
	res, err := u.transact(ctx, []byte(bye.String()), dst, branch, false)
	if err != nil {
		return 0, err
	}
	u.forget(callID)
	if sess, err := u.in.store.acquire(ctx, a.hd); err == nil {
		if d := sess.state.Dialogs[callID]; d != nil {
			d.State, d.Ended = "terminated", time.Now()
		}
		sess.commit(ctx, true)
	}
	return res.StatusCode, nil
}

// udpHop is the UDP address of a next hop: a URI with an IP address (clb).
func udpHop(next gosip.Uri) (*net.UDPAddr, error) {
	ip, err := netip.ParseAddr(strings.Trim(next.Host, "[]"))
	if err != nil {
		return nil, errors.New("the next hop " + next.Host + " is not an IP address")
	}
	port := next.Port
	if port == 0 {
		port = 5060
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))), nil
}

// transact sends a request the UAS makes (a BYE, an INVITE) as a client
// transaction: again on the RFC 3261 timer (from 500 ms, doubling, at most
// 4 s; an INVITE's only until a provisional response) until a final
// response, which it returns, or ctx's end.
func (u *uas) transact(ctx context.Context, data []byte, dst *net.UDPAddr, branch string, invite bool) (*gosip.Response, error) {
	responses := make(chan *gosip.Response, 4)
	u.mu.Lock()
	u.pending[branch] = responses
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		delete(u.pending, branch)
		u.mu.Unlock()
	}()
	resend := true
	for interval := 500 * time.Millisecond; ; interval = min(2*interval, 4*time.Second) {
		if resend {
			if _, err := u.conn.WriteToUDP(data, dst); err != nil {
				return nil, err
			}
		}
		t := time.NewTimer(interval)
		for waiting := true; waiting; {
			select {
			case res := <-responses:
				if res.StatusCode < 200 {
					resend = resend && !invite
					continue
				}
				t.Stop()
				return res, nil
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
				waiting = false
			}
		}
	}
}

// responseTo hands a response to a request the UAS sent to its waiter; a
// 2xx to an INVITE of a call it placed, sent again because the ACK was
// lost, gets the ACK again.
func (u *uas) responseTo(res *gosip.Response) {
	if res.Via() == nil {
		return
	}
	branch, _ := res.Via().Params.Get("branch")
	u.mu.Lock()
	c := u.pending[branch]
	var ack []byte
	var ackTo *net.UDPAddr
	if a := u.answered[res.CallID().Value()]; c == nil && a != nil && res.StatusCode/100 == 2 && res.CSeq() != nil && res.CSeq().MethodName == gosip.INVITE {
		ack, ackTo = a.ack, a.ackTo
	}
	u.mu.Unlock()
	switch {
	case c != nil:
		select {
		case c <- res:
		default:
		}
	case ack != nil:
		_, _ = u.conn.WriteToUDP(ack, ackTo)
	}
}
