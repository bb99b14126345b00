package instance

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

// binding is where an address of record is registered: its contact and
// the Path to it (RFC 3327), which a call to it follows.
type binding struct {
	contact gosip.Uri
	path    []gosip.Uri
	expires time.Time
}

// maxBindings bounds the registrations the instance keeps; past it a new
// address of record is answered but not kept.
const maxBindings = 10_000

// errNotRegistered is a call to an address of record with no live binding.
var errNotRegistered = errors.New("not registered")

// aorOf is an address of record as a registration and a call name it.
func aorOf(u gosip.Uri) string { return strings.ToLower(u.User + "@" + u.Host) }

// bind keeps the first Contact of a REGISTER as the binding of its To,
// with the Path clb put in (expires 0 removes it).
func (u *uas) bind(req *gosip.Request, contact *gosip.ContactHeader, expires int) {
	aor := aorOf(req.To().Address)
	u.mu.Lock()
	defer u.mu.Unlock()
	if expires == 0 {
		delete(u.bindings, aor)
		return
	}
	if len(u.bindings) >= maxBindings && u.bindings[aor] == nil {
		return
	}
	b := &binding{contact: *contact.Address.Clone(), expires: time.Now().Add(time.Duration(expires) * time.Second)}
	for _, h := range req.GetHeaders("Path") {
		var p gosip.Uri
		if err := gosip.ParseUri(strings.Trim(strings.TrimSpace(h.Value()), "<>"), &p); err == nil {
			b.path = append(b.path, p)
		}
	}
	u.bindings[aor] = b
}

func (u *uas) binding(aor string) *binding {
	u.mu.Lock()
	defer u.mu.Unlock()
	b := u.bindings[strings.ToLower(strings.TrimPrefix(aor, "sip:"))]
	if b == nil || time.Now().After(b.expires) {
		return nil
	}
	return b
}

// call places a call to a registered address of record (a browser phone
// registered through clb): an INVITE with a WebRTC offer, by the binding's
// Path, then the ACK of its 200. The dialog is kept as an answered one
// is, so that either side can end it. It returns the Call-ID and the
// INVITE's final status.
//
// The dialog's key is the one clb's default SIP rule gives (From tag and
// Call-ID, SPEC section 5): the instance stores it there, where the
// callee's BYE, routed by that key, looks for it.
func (u *uas) call(ctx context.Context, aor string) (string, int, error) {
	b := u.binding(aor)
	if b == nil {
		return "", 0, errNotRegistered
	}
	next := b.contact
	if len(b.path) > 0 {
		next = b.path[0]
	}
	dst, err := udpHop(next)
	if err != nil {
		return "", 0, err
	}
	callID, tag, branch := newTag()+"@"+u.in.name, newTag(), gosip.GenerateBranch()
	local := u.conn.LocalAddr().(*net.UDPAddr)
	from := gosip.FromHeader{Address: gosip.Uri{Scheme: "sip", User: u.in.name, Host: local.IP.String(), Port: local.Port},
		Params: gosip.HeaderParams{{K: "tag", V: tag}}}
	user, host, _ := strings.Cut(strings.TrimPrefix(aor, "sip:"), "@")
	to := gosip.ToHeader{Address: gosip.Uri{Scheme: "sip", User: user, Host: host}, Params: gosip.HeaderParams{}}

	inv := gosip.NewRequest(gosip.INVITE, b.contact)
	u.via(inv, branch)
	for _, r := range b.path {
		inv.AppendHeader(&gosip.RouteHeader{Address: r})
	}
	inv.AppendHeader(&from)
	inv.AppendHeader(&to)
	cid := gosip.CallIDHeader(callID)
	inv.AppendHeader(&cid)
	inv.AppendHeader(&gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.INVITE})
	inv.AppendHeader(gosip.NewHeader("Contact", u.contact))
	mf := gosip.MaxForwardsHeader(70)
	inv.AppendHeader(&mf)
	inv.AppendHeader(gosip.NewHeader("Content-Type", "application/sdp"))
	inv.SetBody(newWebRTCOffer())
	res, err := u.transact(ctx, []byte(inv.String()), dst, branch, true)
	if err != nil {
		return callID, 0, err
	}
	if res.StatusCode >= 300 {
		// The ACK of a failure is the INVITE transaction's: same branch,
		// same hop.
		ack := gosip.NewRequest(gosip.ACK, b.contact)
		u.via(ack, branch)
		for _, r := range b.path {
			ack.AppendHeader(&gosip.RouteHeader{Address: r})
		}
		ack.AppendHeader(&from)
		if t := res.To(); t != nil {
			ack.AppendHeader(t)
		}
		ack.AppendHeader(&cid)
		ack.AppendHeader(&gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.ACK})
		ack.AppendHeader(&mf)
		ack.SetBody(nil)
		_, _ = u.conn.WriteToUDP([]byte(ack.String()), dst)
		return callID, res.StatusCode, nil
	}

	// The dialog (RFC 3261 12.1.2): the route set is the 200's
	// Record-Route reversed, the remote target its Contact.
	a := &answered{hd: headers{key: tag + callID}, callID: callID, target: b.contact, cseq: 1}
	if c := res.Contact(); c != nil {
		a.target = *c.Address.Clone()
	}
	rrs := res.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		if rr, ok := rrs[i].(*gosip.RecordRouteHeader); ok {
			a.routes = append(a.routes, *rr.Address.Clone())
		}
	}
	a.local = gosip.ToHeader{Address: from.Address, Params: from.Params}
	a.remote = gosip.FromHeader{Address: to.Address}
	if t := res.To(); t != nil {
		a.remote.Params = t.Params.Clone()
	}
	remoteTag, _ := a.remote.Params.Get("tag")
	ackTo := dst
	if len(a.routes) > 0 {
		if ackTo, err = udpHop(a.routes[0]); err != nil {
			return callID, res.StatusCode, err
		}
	}
	ack := gosip.NewRequest(gosip.ACK, a.target)
	u.via(ack, gosip.GenerateBranch())
	for _, r := range a.routes {
		ack.AppendHeader(&gosip.RouteHeader{Address: r})
	}
	ack.AppendHeader(&from)
	ack.AppendHeader(&gosip.ToHeader{Address: a.remote.Address, Params: a.remote.Params})
	ack.AppendHeader(&cid)
	ack.AppendHeader(&gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.ACK})
	ack.AppendHeader(&mf)
	ack.SetBody(nil)
	a.ack, a.ackTo = []byte(ack.String()), ackTo

	sess, err := u.in.store.acquire(ctx, a.hd)
	if err != nil {
		return callID, res.StatusCode, err
	}
	sess.state.Dialogs[callID] = &Dialog{CallID: callID, LocalTag: tag, RemoteTag: remoteTag, State: "confirmed"}
	sess.commit(ctx, true)
	u.mu.Lock()
	if len(u.answered) < maxAnswered {
		u.answered[callID] = a
	}
	u.mu.Unlock()
	if _, err := u.conn.WriteToUDP(a.ack, ackTo); err != nil {
		return callID, res.StatusCode, err
	}
	return callID, res.StatusCode, nil
}

// via puts the UAS's own Via, with branch, on a request it sends.
func (u *uas) via(req *gosip.Request, branch string) {
	local := u.conn.LocalAddr().(*net.UDPAddr)
	req.AppendHeader(&gosip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
		Host: local.IP.String(), Port: local.Port, Params: gosip.HeaderParams{{K: "branch", V: branch}}})
}

// requestExpires is a REGISTER's registration time: its Expires, else
// 600 s; at most an hour.
func requestExpires(req *gosip.Request) int {
	if h := req.GetHeader("Expires"); h != nil {
		if e, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && e >= 0 {
			return min(e, 3600)
		}
	}
	return 600
}

// expiresOf is a Contact's registration time: its expires parameter, else
// the request's; at most an hour.
func expiresOf(req *gosip.Request, c *gosip.ContactHeader) int {
	if v, ok := c.Params.Get("expires"); ok {
		if e, err := strconv.Atoi(v); err == nil && e >= 0 {
			return min(e, 3600)
		}
	}
	return requestExpires(req)
}
