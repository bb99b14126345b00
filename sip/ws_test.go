package sip

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"clb/config"
	"clb/policy"
)

// wsClientConn writes each Write as one masked text frame: a WebSocket
// SIP phone's connection, as the harness's peer writes to it.
type wsClientConn struct{ net.Conn }

func (c wsClientConn) Write(b []byte) (int, error) {
	if err := wsutil.WriteClientText(c.Conn, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// wsDial opens a WebSocket connection to clb's transport ("ws" or "wss")
// listener with gobwas/ws's client (a WebSocket implementation other than
// clb's framing), asking for subprotocol sip; local, if valid, is the
// address to dial from.
func (c *cluster) wsDial(transport string, local netip.AddrPort, header http.Header) (net.Conn, io.Reader, error) {
	c.t.Helper()
	d := ws.Dialer{Protocols: []string{"sip"}, Timeout: wait}
	if header != nil {
		d.Header = ws.HandshakeHeaderHTTP(header)
	}
	if local.IsValid() {
		d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(local)}
			return nd.DialContext(ctx, network, addr)
		}
	}
	if transport == "wss" {
		d.TLSConfig = c.ca.ClientConfig()
	}
	conn, br, _, err := d.Dial(context.Background(), transport+"://"+c.clb(transport).String()+"/sip")
	if err != nil {
		return nil, nil, err
	}
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	return conn, r, nil
}

// wsPhone is a SIP phone on a WebSocket connection to clb, as a harness
// peer: what it sends goes out as text frames on that connection, what
// clb sends it is queued in its inbox.
func (c *cluster) wsPhone(name, transport string) *peer {
	c.t.Helper()
	conn, r, err := c.wsDial(transport, netip.AddrPort{}, nil)
	if err != nil {
		c.t.Fatalf("%s: %v", name, err)
	}
	return c.wsPeer(name, transport, conn, r)
}

func (c *cluster) wsPeer(name, transport string, conn net.Conn, r io.Reader) *peer {
	p := &peer{t: c.t, name: name, transport: transport, addr: localAddr(conn.LocalAddr()),
		inbox: make(chan envelope, 64), conns: map[netip.AddrPort]net.Conn{c.clb(transport): wsClientConn{conn}}}
	go func() {
		rw := struct {
			io.Reader
			io.Writer
		}{r, conn}
		for {
			data, _, err := wsutil.ReadServerData(rw)
			if err != nil {
				return
			}
			m, _ := gosip.ParseMessage(data)
			p.inbox <- envelope{p.name, m, data}
		}
	}()
	c.t.Cleanup(func() { conn.Close() })
	return p
}

// quietPeer fails if p has anything queued.
func quietPeer(t *testing.T, p *peer) {
	t.Helper()
	select {
	case e := <-p.inbox:
		t.Fatalf("%s got an unexpected message:\n%s", p.name, e.raw)
	default:
	}
}

func wsCluster(t *testing.T, w config.WS, tls bool) *cluster {
	return newCluster(t, clusterOptions{n: 3, ws: &w, tls: tls})
}

// handshake sends a WebSocket handshake by hand and returns clb's response.
func handshake(t *testing.T, addr netip.AddrPort, path string, fields map[string]string) (*http.Response, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr.String(), wait)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(wait))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr.String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	for k, v := range fields {
		req += k + ": " + v + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body := ""
	if res.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(res.Body)
		body = string(b)
	}
	return res, body
}

// TestWSHandshake: clb takes a WebSocket handshake only with subprotocol
// sip (400 otherwise, saying so), from an Origin of ws.origins (403
// otherwise) and to the listener's path (404 otherwise); the one it takes
// answers 101 with Sec-WebSocket-Protocol: sip.
func TestWSHandshake(t *testing.T) {
	c := wsCluster(t, config.WS{Origins: []string{"https://phone.example.com"}}, false)
	good := map[string]string{"Sec-WebSocket-Protocol": "chat, sip", "Origin": "https://phone.example.com"}
	for _, tc := range []struct {
		name     string
		path     string
		fields   map[string]string
		code     int
		bodyHint string
	}{
		{name: "no subprotocol", path: "/sip", fields: map[string]string{"Origin": "https://phone.example.com"}, code: 400, bodyHint: "subprotocol sip"},
		{name: "other subprotocol", path: "/sip", fields: map[string]string{"Sec-WebSocket-Protocol": "chat", "Origin": "https://phone.example.com"}, code: 400, bodyHint: "subprotocol sip"},
		{name: "bad origin", path: "/sip", fields: map[string]string{"Sec-WebSocket-Protocol": "sip", "Origin": "https://evil.example.com"}, code: 403, bodyHint: "origin"},
		{name: "no origin", path: "/sip", fields: map[string]string{"Sec-WebSocket-Protocol": "sip"}, code: 403, bodyHint: "origin"},
		{name: "other path", path: "/other", fields: good, code: 404, bodyHint: "path"},
		{name: "good", path: "/sip?x=1", fields: good, code: 101},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := handshake(t, c.ws, tc.path, tc.fields)
			if res.StatusCode != tc.code || !strings.Contains(body, tc.bodyHint) {
				t.Fatalf("status %d %q, want %d with %q", res.StatusCode, body, tc.code, tc.bodyHint)
			}
			if tc.code == 101 && res.Header.Get("Sec-WebSocket-Protocol") != "sip" {
				t.Errorf("101 with Sec-WebSocket-Protocol %q, want sip", res.Header.Get("Sec-WebSocket-Protocol"))
			}
		})
	}
}

// wsRoutes checks the double Record-Route of an INVITE from a WebSocket
// phone as the instance got it: the entry facing the instance on top (its
// transport, no flow token), then the one facing the client (transport ws
// or wss, clb's WebSocket listener, a flow token), both with the dialog's
// key. It returns the flow token.
func wsRoutes(t *testing.T, inv *gosip.Request, transport, instanceTransport string, key string) string {
	t.Helper()
	rrs := inv.GetHeaders("record-route")
	if len(rrs) != 2 {
		t.Fatalf("INVITE at the instance has %d Record-Route entries, want 2: %v", len(rrs), rrs)
	}
	inner, outer := rrs[0].(*gosip.RecordRouteHeader).Address, rrs[1].(*gosip.RecordRouteHeader).Address
	if tr, _ := inner.UriParams.Get("transport"); tr != instanceTransport || inner.UriParams.Has(paramFlow) {
		t.Errorf("the instance-facing Record-Route %s: want transport=%s and no flow", inner.String(), instanceTransport)
	}
	if tr, _ := outer.UriParams.Get("transport"); tr != transport || !outer.UriParams.Has(paramFlow) {
		t.Errorf("the client-facing Record-Route %s: want transport=%s and a flow", outer.String(), transport)
	}
	for _, u := range []gosip.Uri{inner, outer} {
		if k, _ := u.UriParams.Get(paramKey); k != policy.EscapeKey(key) {
			t.Errorf("Record-Route %s: bekey %q, want %q", u.String(), k, policy.EscapeKey(key))
		}
	}
	flow, _ := outer.UriParams.Get(paramFlow)
	return flow
}

// TestWSCall: a phone on ws:// calls through clb to UDP instances: the
// INVITE reaches an instance over UDP with clb's UDP Via and the double
// Record-Route; the 180 and 200 come back over the WebSocket; the phone's
// ACK and BYE (its route set the Record-Route reversed) reach the same
// instance, without clb's two Route entries, with the X-CLB-* fields; the
// BYE's 200 comes back.
func TestWSCall(t *testing.T) {
	c := wsCluster(t, config.WS{}, false)
	phone := c.wsPhone("phone", "ws")
	d, inv := c.call(phone, "alice")
	key := d.fromTag + d.callID
	c.expectRouted(inv, d.instance, key, "")
	if v := inv.GetHeaders("via")[0].(*gosip.ViaHeader); !isClbVia(v) || v.Transport != "UDP" {
		t.Errorf("INVITE at the instance: top Via %v, want clb's over UDP", v)
	}
	if v := inv.GetHeaders("via")[1].(*gosip.ViaHeader); v.Transport != "WS" {
		t.Errorf("INVITE at the instance: the phone's Via %v, want WS", v)
	}
	wsRoutes(t, inv, "ws", "udp", key)
	uas := c.instances[d.instance]
	phone.send(inDialog(phone, d, gosip.BYE, true), c.ws)
	bye := uas.recvRequest("BYE")
	c.expectRouted(bye, d.instance, key, d.instance)
	if rs := bye.GetHeaders("route"); len(rs) != 0 {
		t.Errorf("BYE at the instance still has Route %v", rs)
	}
	uas.send(respond(uas, bye, 200, "OK", ""), c.udp)
	phone.recvResponse(200)
	c.quiet()
	quietPeer(t, phone)
}

// TestWSCalleeBye: a BYE the instance sends towards the WebSocket phone
// (its route set the Record-Route in order: clb's UDP entry, then the
// client-facing one with the flow token) reaches the phone over its
// WebSocket with clb's WS Via and no Route or X-CLB-* left; the phone's 200
// reaches the instance. clb keeps nothing per dialog: the token is all.
func TestWSCalleeBye(t *testing.T) {
	c := wsCluster(t, config.WS{}, false)
	phone := c.wsPhone("phone", "ws")
	d, _ := c.call(phone, "bob")
	uas := c.instances[d.instance]
	uas.send(inDialog(uas, d, gosip.BYE, false), c.udp)
	bye := phone.recvRequest("BYE")
	if v := bye.GetHeaders("via")[0].(*gosip.ViaHeader); !isClbVia(v) || v.Transport != "WS" || v.Port != int(c.ws.Port()) {
		t.Errorf("BYE at the phone: top Via %v, want clb's WS listener %v", v, c.ws)
	}
	if rs := bye.GetHeaders("route"); len(rs) != 0 {
		t.Errorf("BYE at the phone still has Route %v", rs)
	}
	if v := header(bye, "X-CLB-Key"); v != "" {
		t.Errorf("BYE leaving the cluster has X-CLB-Key %s", v)
	}
	phone.send(respond(phone, bye, 200, "OK", ""), c.ws)
	uas.recvResponse(200)
	c.quiet()
}

// alterToken is tok with its i-th character replaced by another base64url
// one: still a URI parameter's token, with another MAC. (A flipped bit can
// make a character one a URI may not hold, '_' a backslash, and the answer
// is then to a malformed Route, not to a forged token.)
func alterToken(tok string, i int) string {
	b := []byte(tok)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// withFlow is the route set routes with the flow token of the entry that
// has one replaced.
func withFlow(routes []gosip.Uri, flow string) []gosip.Uri {
	out := make([]gosip.Uri, len(routes))
	for i, r := range routes {
		r.UriParams = r.UriParams.Clone()
		if r.UriParams.Has(paramFlow) {
			r.UriParams.Add(paramFlow, flow)
		}
		out[i] = r
	}
	return out
}

// TestWSFlowRefused: flow tokens that are not the connection's own reach
// nothing. An instance's BYE with an altered token gets 403, one with the
// token of a connection that has closed gets 430 Flow Failed (even once a
// new connection has the same address); a phone that presents another
// phone's token, going into the cluster or posing as the inside to reach
// that phone, gets 403. After each, a message that must come through
// comes through first: nothing else got anywhere.
func TestWSFlowRefused(t *testing.T) {
	c := wsCluster(t, config.WS{}, false)
	alice := c.wsPhone("alice", "ws")
	mallory := c.wsPhone("mallory", "ws")
	d, _ := c.call(alice, "alice")
	uas := c.instances[d.instance]
	token := ""
	for _, r := range d.routes {
		if v, ok := r.UriParams.Get(paramFlow); ok {
			token = v
		}
	}
	forged := alterToken(token, 3)

	t.Run("altered token from an instance", func(t *testing.T) {
		dd := *d
		dd.routes = withFlow(d.routes, forged)
		uas.send(inDialog(uas, &dd, gosip.BYE, false), c.udp)
		uas.recvResponse(403)
		// The genuine route set still works, and that BYE is the first
		// thing alice hears.
		uas.send(inDialog(uas, d, gosip.INFO, false), c.udp)
		alice.recvRequest("INFO")
		quietPeer(t, alice)
	})
	t.Run("another phone's token into the cluster", func(t *testing.T) {
		m := *d
		mallory.send(inDialog(mallory, &m, gosip.BYE, true), c.ws)
		mallory.recvResponse(403)
		c.quiet()
		quietPeer(t, alice)
	})
	t.Run("another phone's token posing as the inside", func(t *testing.T) {
		m := *d
		// mallory sends what the instance would: the callee's side of the
		// dialog, so that clb takes it as leaving the cluster.
		mallory.send(inDialog(mallory, &m, gosip.BYE, false), c.ws)
		mallory.recvResponse(403)
		alice.send(inDialog(alice, d, gosip.INFO, true), c.ws)
		uas.recvRequest("INFO")
		c.quiet()
		quietPeer(t, alice)
	})
	t.Run("token of a closed connection", func(t *testing.T) {
		old := alice.addr
		// An unmasked frame breaks RFC 6455: clb closes the connection
		// (first, so that alice's address is free again at once).
		raw := alice.conns[c.ws].(wsClientConn).Conn
		if _, err := raw.Write([]byte{0x81, 0x00}); err != nil {
			t.Fatal(err)
		}
		until(t, "clb lets alice's connection go", func() bool { return c.server.connWith("ws", old) == nil })
		raw.Close()
		uas.send(inDialog(uas, d, gosip.BYE, false), c.udp)
		uas.recvResponse(430)
		// A new connection from the same address has a new id: the old
		// token does not name it. (The kernel may refuse the address for
		// a while: then this part is not run.)
		again, r, err := c.wsDial("ws", old, nil)
		if err != nil {
			t.Logf("no new connection from %v: %v", old, err)
			return
		}
		alice2 := c.wsPeer("alice2", "ws", again, r)
		until(t, "clb takes the new connection", func() bool { return c.server.connWith("ws", old) != nil })
		uas.send(inDialog(uas, d, gosip.BYE, false), c.udp)
		uas.recvResponse(430)
		quietPeer(t, alice2)
		c.quiet()
	})
}

// until polls cond until it holds, failing after wait.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(wait)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within %v", what, wait)
		}
	}
}

// TestWSViaTransportMismatch: a phone on ws:// whose Via says WSS (as some
// clients write whatever their URL) still gets its responses on its
// connection: clb's Via keeps the transport the request came over.
func TestWSViaTransportMismatch(t *testing.T) {
	c := wsCluster(t, config.WS{}, true)
	conn, r, err := c.wsDial("ws", netip.AddrPort{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	phone := c.wsPeer("phone", "ws", conn, r)
	phone.transport = "wss"                // its Via
	phone.conns[c.wss] = phone.conns[c.ws] // and what call() sends on: still the ws connection
	d, inv := c.call(phone, "dave")
	if v := inv.GetHeaders("via")[1].(*gosip.ViaHeader); v.Transport != "WSS" {
		t.Fatalf("the phone's Via %v, want WSS", v)
	}
	wsRoutes(t, inv, "ws", "udp", d.fromTag+d.callID)
	c.quiet()
}

// TestWSReload: SetWS (a reload) swaps ws.origins for the next handshakes.
func TestWSReload(t *testing.T) {
	c := wsCluster(t, config.WS{Origins: []string{"https://a.example.com"}}, false)
	fields := func(origin string) map[string]string {
		return map[string]string{"Sec-WebSocket-Protocol": "sip", "Origin": origin}
	}
	if res, _ := handshake(t, c.ws, "/sip", fields("https://b.example.com")); res.StatusCode != 403 {
		t.Fatalf("b before the reload: %d, want 403", res.StatusCode)
	}
	c.server.SetWS(config.WS{Origins: []string{"https://b.example.com"}})
	if res, _ := handshake(t, c.ws, "/sip", fields("https://b.example.com")); res.StatusCode != 101 {
		t.Errorf("b after the reload: %d, want 101", res.StatusCode)
	}
	if res, _ := handshake(t, c.ws, "/sip", fields("https://a.example.com")); res.StatusCode != 403 {
		t.Errorf("a after the reload: %d, want 403", res.StatusCode)
	}
}
