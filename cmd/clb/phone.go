package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

// phone is a SIP user agent client for clb demo and the end-to-end tests:
// many dialogs over one UDP socket, sent to clb, with RFC 3261's
// retransmissions (Timer A/E from T1, Timer B/F at 64×T1) so that a request
// lost with a dying instance is sent again once clb has routed around it.
//
// With several clb nodes (the addresses an advertised name resolves to), a
// dialog sends to one of them, and moves to the next when a transaction
// goes unanswered for failover, as an RFC 3263 client tries the next
// address of the name.
type phone struct {
	conn     *net.UDPConn
	nodes    []*net.UDPAddr
	failover time.Duration // 0: never move

	mu      sync.Mutex
	waiting map[string]chan *gosip.Response // by Via branch
}

const (
	t1 = 500 * time.Millisecond
	t2 = 4 * time.Second
)

func newPhone(clb string) (*phone, error) { return newPhoneAcross([]string{clb}, 0) }

// newPhoneAcross is a phone of the clb nodes at addrs (host:port), whose
// dialogs move to the next node after failover without an answer.
func newPhoneAcross(addrs []string, failover time.Duration) (*phone, error) {
	var nodes []*net.UDPAddr
	for _, a := range addrs {
		addr, err := net.ResolveUDPAddr("udp", a)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, addr)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: nodes[0].IP})
	if err != nil {
		return nil, err
	}
	p := &phone{conn: conn, nodes: nodes, failover: failover, waiting: map[string]chan *gosip.Response{}}
	go p.read()
	return p, nil
}

func (p *phone) close() { p.conn.Close() }

func (p *phone) read() {
	buf := make([]byte, 65535)
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			return
		}
		m, err := gosip.ParseMessage(append([]byte(nil), buf[:n]...))
		res, ok := m.(*gosip.Response)
		if err != nil || !ok || res.Via() == nil {
			continue
		}
		branch, _ := res.Via().Params.Get("branch")
		p.mu.Lock()
		ch := p.waiting[branch]
		p.mu.Unlock()
		if ch != nil {
			select {
			case ch <- res:
			default:
			}
		}
	}
}

// call is one dialog of the phone.
type call struct {
	p              *phone
	user           string
	callID         string
	fromTag, toTag string
	cseq           uint32
	route          []string // the route set, from the 2xx's Record-Route
	target         string   // the remote target, from the 2xx's Contact
	servedBy       string   // the instance that answered last
	node           int      // the clb node it sends to, an index of p.nodes
	moves          int      // times it moved to another node
}

// clb is the node the dialog sends to now.
func (c *call) clb() *net.UDPAddr { return c.p.nodes[c.node%len(c.p.nodes)] }

// exchange is one transaction's outcome.
type exchange struct {
	sent, answered time.Time
	code           int    // final status; 0 if none came (Timer B/F)
	servedBy       string // X-CLB-Served-By of the final response
	node           int    // the clb node it was first sent to
}

func (x exchange) ok() bool { return x.code >= 200 && x.code < 300 }

func token() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newCall is a dialog not yet set up, from user.
func (p *phone) newCall(user string) *call {
	return &call{p: p, user: user, callID: token() + "@clb-demo", fromTag: token()}
}

// request builds a request of the dialog with a new branch.
func (c *call) request(method, branch string) string {
	var b strings.Builder
	uri := "sip:service@cluster.example"
	if c.target != "" {
		uri = c.target
	}
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", method, uri)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=%s;rport\r\n", c.p.conn.LocalAddr(), branch)
	for _, r := range c.route {
		fmt.Fprintf(&b, "Route: %s\r\n", r)
	}
	fmt.Fprintf(&b, "From: <sip:%s@users.example>;tag=%s\r\n", c.user, c.fromTag)
	if c.toTag != "" {
		fmt.Fprintf(&b, "To: <sip:service@cluster.example>;tag=%s\r\n", c.toTag)
	} else {
		b.WriteString("To: <sip:service@cluster.example>\r\n")
	}
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: %d %s\r\nMax-Forwards: 70\r\n", c.callID, c.cseq, method)
	if method == "INVITE" {
		fmt.Fprintf(&b, "Contact: <sip:%s@%s>\r\n", c.user, c.p.conn.LocalAddr())
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

// transact sends a request and retransmits it until a final response, as a
// UDP client transaction does; an INVITE stops retransmitting on a
// provisional response and a non-INVITE backs off to T2.
func (c *call) transact(ctx context.Context, method string) (exchange, *gosip.Response) {
	c.cseq++
	branch := "z9hG4bK" + token()
	msg := []byte(c.request(method, branch))
	ch := make(chan *gosip.Response, 8)
	c.p.mu.Lock()
	c.p.waiting[branch] = ch
	c.p.mu.Unlock()
	defer func() {
		c.p.mu.Lock()
		delete(c.p.waiting, branch)
		c.p.mu.Unlock()
	}()
	x := exchange{sent: time.Now(), node: c.node % len(c.p.nodes)}
	deadline := time.NewTimer(64 * t1)
	defer deadline.Stop()
	interval, retransmit := t1, true
	heard, since := false, x.sent // a response came; when it last moved
	for {
		if retransmit {
			_, _ = c.p.conn.WriteToUDP(msg, c.clb())
		}
		timer := time.NewTimer(interval)
		select {
		case res := <-ch:
			timer.Stop()
			heard = true
			if res.StatusCode < 200 {
				if method == "INVITE" {
					retransmit = false
				}
				continue
			}
			x.answered, x.code = time.Now(), res.StatusCode
			if h := res.GetHeader("X-CLB-Served-By"); h != nil {
				x.servedBy = h.Value()
				c.servedBy = x.servedBy
			}
			return x, res
		case <-timer.C:
			if method == "INVITE" {
				interval *= 2
			} else {
				interval = min(2*interval, t2)
			}
			if c.p.failover > 0 && !heard && len(c.p.nodes) > 1 && time.Since(since) >= c.p.failover {
				c.node++
				c.moves++
				since, interval = time.Now(), t1
			}
		case <-deadline.C:
			timer.Stop()
			return x, nil
		case <-ctx.Done():
			timer.Stop()
			return x, nil
		}
	}
}

// invite sets the dialog up: INVITE, then ACK for its 2xx.
func (c *call) invite(ctx context.Context) exchange {
	x, res := c.send(ctx, "INVITE")
	if res == nil || !x.ok() {
		return x
	}
	c.toTag, _ = res.To().Params.Get("tag")
	c.route = nil
	for _, h := range res.GetHeaders("Record-Route") {
		c.route = append(c.route, h.Value())
	}
	if ct := res.Contact(); ct != nil {
		c.target = ct.Address.String()
	}
	c.ack()
	return x
}

// reinvite refreshes the dialog (re-INVITE and ACK).
func (c *call) reinvite(ctx context.Context) exchange {
	x, res := c.send(ctx, "INVITE")
	if res != nil && x.ok() {
		c.ack()
	}
	return x
}

// ack acknowledges a 2xx: its own transaction with the INVITE's CSeq,
// sent once.
func (c *call) ack() {
	_, _ = c.p.conn.WriteToUDP([]byte(c.request("ACK", "z9hG4bK"+token())), c.clb())
}

// bye ends the dialog.
func (c *call) bye(ctx context.Context) exchange {
	x, _ := c.send(ctx, "BYE")
	return x
}

// send is transact, sent again as a new transaction through the next node
// after a 503, twice at most, when the phone has several nodes (RFC 3263
// 4.3: a 503 sends the client to the next server). The exchange keeps its
// first sending.
func (c *call) send(ctx context.Context, method string) (exchange, *gosip.Response) {
	x, res := c.transact(ctx, method)
	for try := 0; try < 2 && x.code == 503 && c.p.failover > 0 && len(c.p.nodes) > 1; try++ {
		c.node++
		c.moves++
		sent, node := x.sent, x.node
		x, res = c.transact(ctx, method)
		x.sent, x.node = sent, node
	}
	return x, res
}
