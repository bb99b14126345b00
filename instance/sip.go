package instance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"strconv"
	"sync"
	"time"

	"clb/policy"

	gosip "github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// uas is the SIP side: a user agent server over UDP that answers INVITE
// (180, then 200 after the ring time), ACK, BYE, re-INVITE, CANCEL and
// OPTIONS, keeping each dialog in its key's State.
//
// It is deliberately plain: no transaction layer, every retransmission is
// answered again from the state (the 200 to an INVITE included), which is
// enough for a UAC on loopback.
type uas struct {
	in      *Instance
	conn    *net.UDPConn
	contact string
	ring    time.Duration

	mu       sync.Mutex
	ringing  map[string]chan struct{}        // Call-ID → closed by CANCEL
	answered map[string]*answered            // Call-ID → a dialog it can hang up (hangup.go)
	pending  map[string]chan *gosip.Response // Via branch of a request it sent → its responses
	bindings map[string]*binding             // address of record → where it is registered (call.go)
	sem      chan struct{}                   // bounds messages handled at once
}

func newUAS(in *Instance, conn *net.UDPConn, ring time.Duration) *uas {
	return &uas{
		in:       in,
		conn:     conn,
		contact:  "<sip:" + in.name + "@" + conn.LocalAddr().String() + ">",
		ring:     ring,
		ringing:  map[string]chan struct{}{},
		answered: map[string]*answered{},
		pending:  map[string]chan *gosip.Response{},
		bindings: map[string]*binding{},
		sem:      make(chan struct{}, 256),
	}
}

func (u *uas) serve(ctx context.Context, wg *sync.WaitGroup) {
	buf := make([]byte, 65535)
	for {
		n, from, err := u.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		data := append([]byte(nil), buf[:n]...)
		select {
		case u.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-u.sem; wg.Done() }()
			u.handle(ctx, data, from)
		}()
	}
}

func (u *uas) handle(ctx context.Context, data []byte, from *net.UDPAddr) {
	m, err := gosip.ParseMessage(data)
	if err != nil {
		return
	}
	if res, ok := m.(*gosip.Response); ok {
		u.responseTo(res)
		return
	}
	req, ok := m.(*gosip.Request)
	if !ok || req.CallID() == nil || req.CSeq() == nil || req.From() == nil || req.To() == nil || req.Via() == nil {
		return
	}
	switch req.Method {
	case gosip.OPTIONS:
		res := u.response(req, 200, "OK", "")
		res.AppendHeader(gosip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"))
		res.AppendHeader(gosip.NewHeader(policy.FieldStarted, u.in.started))
		u.send(res, from)
		return
	case gosip.CANCEL:
		u.cancel(req, from)
		return
	}
	hd, ok := clbHeaders(func(name string) string {
		if h := req.GetHeader(name); h != nil {
			return h.Value()
		}
		return ""
	})
	if !ok {
		if req.Method != gosip.ACK {
			u.send(u.response(req, 400, "Missing X-CLB-Key", ""), from)
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	toTag, _ := req.To().Params.Get("tag")
	switch {
	case req.Method == gosip.REGISTER:
		u.register(req, from)
	case req.Method == gosip.INVITE && toTag == "":
		u.invite(ctx, req, hd, from)
	case req.Method == gosip.ACK:
		if sess, err := u.in.store.acquire(ctx, hd); err == nil {
			sess.release(ctx) // a take-over is replicated; nothing else changes
		}
	default:
		u.inDialog(ctx, req, hd, toTag, from)
	}
}

// invite answers an initial INVITE: 180 at once, 200 after the ring time
// unless a CANCEL comes first (then 487).
func (u *uas) invite(ctx context.Context, req *gosip.Request, hd headers, from *net.UDPAddr) {
	callID := req.CallID().Value()
	sess, err := u.in.store.acquire(ctx, hd)
	if err != nil {
		u.send(u.response(req, 503, "Service Unavailable", ""), from)
		return
	}
	if d := sess.state.Dialogs[callID]; d != nil {
		// A retransmission of an INVITE answered already.
		sess.release(ctx)
		var answer []byte
		if a := u.dialog(callID); a != nil {
			answer = a.answer
		}
		u.send(u.okWith(req, d.LocalTag, answer), from)
		return
	}
	sess.release(ctx)

	u.mu.Lock()
	if _, dup := u.ringing[callID]; dup {
		u.mu.Unlock()
		return // ringing already: the 180 was sent
	}
	cancelled := make(chan struct{})
	u.ringing[callID] = cancelled
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		delete(u.ringing, callID)
		u.mu.Unlock()
	}()
	tag := newTag()
	u.send(u.response(req, 180, "Ringing", tag), from)
	if u.ring > 0 {
		t := time.NewTimer(u.ring)
		defer t.Stop()
		select {
		case <-t.C:
		case <-cancelled:
			u.send(u.response(req, 487, "Request Terminated", tag), from)
			return
		case <-ctx.Done():
			return
		}
	}
	sess, err = u.in.store.acquire(ctx, hd)
	if err != nil {
		u.send(u.response(req, 503, "Service Unavailable", tag), from)
		return
	}
	fromTag, _ := req.From().Params.Get("tag")
	sess.state.Dialogs[callID] = &Dialog{CallID: callID, LocalTag: tag, RemoteTag: fromTag,
		RemoteCSeq: req.CSeq().SeqNo, State: "confirmed"}
	prune(sess.state, time.Now())
	sess.commit(ctx, true) // replicated before the caller hears of it
	answer, _ := webrtcAnswer(req.Body())
	u.remember(req, hd, tag, answer)
	u.send(u.okWith(req, tag, answer), from)
}

// inDialog answers a request inside a dialog: re-INVITE, BYE, and others
// (200 if the dialog is known), 481 when no instance holds the dialog.
func (u *uas) inDialog(ctx context.Context, req *gosip.Request, hd headers, toTag string, from *net.UDPAddr) {
	sess, err := u.in.store.acquire(ctx, hd)
	if err != nil {
		u.send(u.response(req, 503, "Service Unavailable", ""), from)
		return
	}
	d := sess.state.Dialogs[req.CallID().Value()]
	if d == nil || d.LocalTag != toTag {
		sess.release(ctx)
		u.send(u.response(req, 481, "Call/Transaction Does Not Exist", ""), from)
		return
	}
	cseq := req.CSeq().SeqNo
	switch {
	case cseq == d.RemoteCSeq: // sent again: answer again
		sess.release(ctx)
	case cseq < d.RemoteCSeq:
		sess.release(ctx)
		u.send(u.response(req, 500, "CSeq Out of Order", ""), from)
		return
	case d.State == "terminated":
		sess.release(ctx)
		u.send(u.response(req, 481, "Call/Transaction Does Not Exist", ""), from)
		return
	default:
		d.RemoteCSeq = cseq
		switch req.Method {
		case gosip.INVITE:
			d.ReInvites++
		case gosip.BYE:
			d.State, d.Ended = "terminated", time.Now()
			u.forget(d.CallID)
		}
		prune(sess.state, time.Now())
		sess.commit(ctx, true)
	}
	if req.Method == gosip.INVITE {
		u.send(u.ok(req, ""), from)
		return
	}
	u.send(u.response(req, 200, "OK", ""), from)
}

// cancel ends a ringing INVITE with 487; a CANCEL of anything else gets 200
// (the INVITE was answered already) as RFC 3261 9.2 allows.
func (u *uas) cancel(req *gosip.Request, from *net.UDPAddr) {
	u.mu.Lock()
	if c, ok := u.ringing[req.CallID().Value()]; ok {
		delete(u.ringing, req.CallID().Value())
		close(c)
	}
	u.mu.Unlock()
	u.send(u.response(req, 200, "OK", ""), from)
}

// prune drops dialogs ended long enough ago that no BYE can come again.
func prune(st *State, now time.Time) {
	for id, d := range st.Dialogs {
		if d.State == "terminated" && now.Sub(d.Ended) > keepTerminated {
			delete(st.Dialogs, id)
		}
	}
}

// response is a response to req, with the To tag set when tag is given and
// the instance's name in X-CLB-Served-By.
func (u *uas) response(req *gosip.Request, code int, reason, tag string) *gosip.Response {
	res := gosip.NewResponseFromRequest(req, code, reason, nil)
	if to := res.To(); tag != "" && to != nil {
		to.Params.Remove("tag") // sipgo makes one up
		to.Params.Add("tag", tag)
	}
	res.AppendHeader(gosip.NewHeader(servedBy, u.in.name))
	return res
}

func (u *uas) ok(req *gosip.Request, tag string) *gosip.Response { return u.okWith(req, tag, nil) }

// okWith is a 200 with the SDP answer, if any.
func (u *uas) okWith(req *gosip.Request, tag string, answer []byte) *gosip.Response {
	res := u.response(req, 200, "OK", tag)
	res.AppendHeader(gosip.NewHeader("Contact", u.contact))
	if answer != nil {
		res.AppendHeader(gosip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody(answer)
	}
	return res
}

// register accepts any registration for the time asked (600 s by default,
// at most an hour) and keeps the first contact of each address of record,
// with its Path (call.go), so that the instance can call it. The 200 lists
// the registered Contact with its expiry, as a registrar does (RFC 3261
// 10.3), which clients such as JsSIP look for, and the Path (RFC 3327 5.3).
func (u *uas) register(req *gosip.Request, from *net.UDPAddr) {
	res := u.response(req, 200, "OK", newTag())
	bound := false
	for _, h := range req.GetHeaders("Contact") {
		c, ok := h.(*gosip.ContactHeader)
		if !ok || c.Address.Wildcard {
			continue
		}
		n := expiresOf(req, c)
		if !bound {
			u.bind(req, c, n)
			bound = true
		}
		c = c.Clone()
		c.Params.Remove("expires")
		c.Params.Add("expires", strconv.Itoa(n))
		res.AppendHeader(c)
	}
	for _, h := range req.GetHeaders("Path") {
		res.AppendHeader(gosip.NewHeader("Path", h.Value()))
	}
	res.AppendHeader(gosip.NewHeader("Expires", strconv.Itoa(requestExpires(req))))
	u.send(res, from)
}

// send answers to where the request came from: clb's socket, which sends
// the response on by its own Via.
func (u *uas) send(res *gosip.Response, to *net.UDPAddr) {
	if _, err := u.conn.WriteToUDP([]byte(res.String()), to); err != nil {
		u.in.log.Debug("sip send", zap.Error(err))
	}
}

func newTag() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
