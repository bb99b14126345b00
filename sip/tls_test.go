package sip

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"clb/certs"
	"clb/certs/certstest"
	"clb/config"
	"clb/policy"
)

// tlsPhone is a TLS phone with its own inbox, holding a certificate of the
// cluster's CA and trusting it.
func (c *cluster) tlsPhone(name string) *peer {
	c.t.Helper()
	return newPeerTLS(c.t, name, "tls", "127.0.0.1", nil, c.ca.Issue(c.t, certstest.Leaf{Name: name}).ServerConfig(), c.ca.ClientConfig())
}

// TestTLSDialog: a TLS phone's dialog through clb to TLS instances: clb's
// Via says SIP/2.0/TLS, its Record-Route transport=tls, the ACK and BYE are
// sticky and carry the X-CLB-* fields, and the answers come back.
func TestTLSDialog(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3, transport: "tls"})
	phone := c.tlsPhone("phone")
	d, inv := c.call(phone, "alice")
	key := d.fromTag + d.callID
	c.expectRouted(inv, d.instance, key, "")
	vias := inv.GetHeaders("via")
	if len(vias) != 2 || !isClbVia(vias[0].(*gosip.ViaHeader)) || vias[0].(*gosip.ViaHeader).Transport != "TLS" {
		t.Fatalf("INVITE at instance: Vias %v, want clb's SIP/2.0/TLS on top", vias)
	}
	if v := vias[0].(*gosip.ViaHeader); v.Port != int(c.tls.Port()) {
		t.Errorf("clb's Via %v, want its TLS listener %v", v, c.tls)
	}
	for _, want := range []string{"transport=tls", "lr", "bekey=" + policy.EscapeKey(key)} {
		if !strings.Contains(d.recordRouteLine, want) {
			t.Errorf("Record-Route %s lacks %s", d.recordRouteLine, want)
		}
	}
	phone.send(inDialog(phone, d, gosip.BYE, true), c.tls)
	bye := c.instances[d.instance].recvRequest("BYE")
	c.expectRouted(bye, d.instance, key, d.instance)
	uas := c.instances[d.instance]
	uas.send(respond(uas, bye, 200, "OK", ""), c.tls)
	phone.recvResponse(200)
	c.quiet()
}

// TestTLSCalleeBye: a BYE an instance sends towards a TLS caller leaves by
// the caller's Contact over TLS (clb dials it, verifying its certificate),
// without X-CLB-* fields, and its 200 comes back.
func TestTLSCalleeBye(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3, transport: "tls"})
	phone := c.tlsPhone("phone")
	d, _ := c.call(phone, "bob")
	uas := c.instances[d.instance]
	uas.send(inDialog(uas, d, gosip.BYE, false), c.tls)
	bye := phone.recvRequest("BYE")
	if v := header(bye, "X-CLB-Key"); v != "" {
		t.Errorf("BYE leaving the cluster has X-CLB-Key %s", v)
	}
	if v := bye.GetHeaders("via")[0].(*gosip.ViaHeader); v.Transport != "TLS" {
		t.Errorf("BYE at the phone: top Via %v, want TLS", v)
	}
	phone.send(respond(phone, bye, 200, "OK", ""), c.tls)
	uas.recvResponse(200)
	c.quiet()
}

// TestTLSCalls is the SIP-over-TLS interop proof: a TLS UAC makes 1,000
// calls through clb to three instances over UDP and over TLS; every call
// is set up, its ACK and BYE reach the instance that took the INVITE
// (recvRequest fails on a message at any other instance), every 200 comes
// back to the UAC over the one connection it opened (it listens on
// nothing, so clb cannot have reached it any other way: RFC 5923-style
// reuse), and each instance takes 20%–47% of the calls.
func TestTLSCalls(t *testing.T) {
	const calls = 1000
	for _, transport := range []string{"udp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			c := newCluster(t, clusterOptions{n: 3, transport: transport, tls: true})
			phone := c.tlsPhone("uac")
			phone.tcp.Close() // reachable only over the connection it opens
			taken := map[string]int{}
			for i := range calls {
				d, inv := c.call(phone, fmt.Sprintf("user%d", i))
				if i == 0 {
					v := inv.GetHeaders("via")[0].(*gosip.ViaHeader)
					if v.Transport != strings.ToUpper(transport) {
						t.Errorf("INVITE at instance: clb's Via %v, want %s", v, strings.ToUpper(transport))
					}
					if !strings.Contains(d.recordRouteLine, "transport=tls") {
						t.Errorf("Record-Route towards the TLS caller %s, want transport=tls", d.recordRouteLine)
					}
				}
				uas := c.instances[d.instance]
				phone.send(inDialog(phone, d, gosip.BYE, true), c.tls)
				bye := uas.recvRequest("BYE")
				if bye.CallID().Value() != d.callID || header(bye, "X-CLB-Key") == "" {
					t.Fatalf("BYE at %s: Call-ID %s, X-CLB-Key %q", d.instance, bye.CallID().Value(), header(bye, "X-CLB-Key"))
				}
				uas.send(respond(uas, bye, 200, "OK", ""), c.clb(transport))
				phone.recvResponse(200)
				taken[d.instance]++
			}
			c.quiet()
			for _, name := range c.names {
				if share := float64(taken[name]) / calls; share < 0.20 || share > 0.47 {
					t.Errorf("%s took %.1f%% of the calls, want 20%%–47%%", name, 100*share)
				}
			}
			t.Logf("calls per instance: %v", taken)
		})
	}
}

// TestTLSReload: after the store's material is swapped, a new connection
// gets the new certificate while one opened before keeps carrying calls.
func TestTLSReload(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3, transport: "udp", tls: true})
	old := c.tlsPhone("old")
	old.tcp.Close()
	c.call(old, "before")
	certOf := func(conn net.Conn) string {
		return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	old.mu.Lock()
	oldConn := old.conns[c.tls]
	old.mu.Unlock()
	if got := certOf(oldConn); got != "clb" {
		t.Fatalf("first connection: certificate %q", got)
	}

	dir := t.TempDir()
	cert, key := c.ca.Issue(t, certstest.Leaf{Name: "renewed"}).Write(t, dir, "renewed")
	m, err := certs.Load(certs.Files{Cert: cert, Key: key, InstanceCA: c.ca.WriteCA(t, dir, "ca")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c.server.opts.TLS.Swap(m)

	fresh := c.tlsPhone("fresh")
	fresh.tcp.Close()
	c.call(fresh, "after")
	fresh.mu.Lock()
	freshConn := fresh.conns[c.tls]
	fresh.mu.Unlock()
	if got := certOf(freshConn); got != "renewed" {
		t.Errorf("connection after the reload: certificate %q, want renewed", got)
	}
	d, _ := c.call(old, "before-again")
	if got := certOf(oldConn); got != "clb" {
		t.Errorf("old connection now shows %q", got)
	}
	old.mu.Lock()
	same := old.conns[c.tls] == oldConn
	old.mu.Unlock()
	if !same {
		t.Error("the old phone had to open another connection")
	}
	if d.instance == "" {
		t.Error("no call over the old connection after the reload")
	}
}

// TestTLSClientCertificates: with a client CA, a client without a
// certificate is refused and clb never hears its request; one with a
// certificate of the CA is served.
func TestTLSClientCertificates(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3, transport: "udp", tls: true})
	dir := t.TempDir()
	cert, key := c.ca.Issue(t, certstest.Leaf{Name: "clb"}).Write(t, dir, "clb")
	m, err := certs.Load(certs.Files{Cert: cert, Key: key, ClientCA: c.ca.WriteCA(t, dir, "ca")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c.server.opts.TLS.Swap(m)

	anon, err := tls.Dial("tcp", c.tls.String(), c.ca.ClientConfig())
	if err == nil {
		// TLS 1.3: the refusal (an alert, then the close) comes after the
		// client's side of the handshake is done.
		inv := newInvite(&peer{transport: "tls", addr: localAddr(anon.LocalAddr())}, c.tls, "anon", "call-anon")
		_, _ = io.WriteString(anon, inv.String())
		_ = anon.SetReadDeadline(time.Now().Add(wait))
		_, err = bufio.NewReader(anon).ReadByte()
		anon.Close()
	}
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a client without a certificate was not refused: %v", err)
	}
	c.quiet() // its INVITE reached no instance

	phone := c.tlsPhone("phone")
	phone.tlsClient.Certificates = []tls.Certificate{c.ca.Issue(t, certstest.Leaf{Name: "phone"}).TLS}
	c.call(phone, "carol")
}

// TestTLSHandshakeTimeout: a client that connects to the TLS listener and
// never starts its handshake is closed at the message timeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, transport: "udp", tls: true, messageTimeout: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", c.tls.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v: %v", wait, err)
	}
}

// TestTLSWithoutMaterial: a tls:// listener without TLS material is refused
// at NewServer.
func TestTLSWithoutMaterial(t *testing.T) {
	_, err := NewServer(ServerOptions{Listen: []config.SIPAddr{{Endpoint: config.Endpoint{Transport: "tls", Host: "127.0.0.1"}}}})
	if err == nil || !strings.Contains(err.Error(), `transport "tls" not supported`) {
		t.Fatalf("NewServer: %v", err)
	}
}
