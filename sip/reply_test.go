package sip

import (
	"net/netip"
	"strings"
	"testing"
)

// destinations is a sender that keeps where the proxy sends.
type destinations struct {
	recorder
	to []destination
}

func (d *destinations) send(dst destination, data []byte) error {
	d.to = append(d.to, dst)
	return d.recorder.send(dst, data)
}

// connStub is a connection that takes what it is given.
type connStub struct{ written [][]byte }

func (c *connStub) write(b []byte) error {
	c.written = append(c.written, b)
	return nil
}

// TestReplyOnArrivalTransport: clb's own answer goes back on the transport
// the request came over, to its source, and on its connection when it came
// on one.
func TestReplyOnArrivalTransport(t *testing.T) {
	src := netip.MustParseAddrPort("192.0.2.1:40000")
	msg := "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1:5062;branch=z9hG4bK1\r\n" +
		"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: reply\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 0\r\nContent-Length: 0\r\n\r\n"
	for _, tc := range []struct {
		name      string
		transport string
		conn      conn
	}{
		{name: "datagram", transport: "udp"},
		{name: "stream", transport: "tcp", conn: &connStub{}},
		{name: "a stream to come", transport: "tls", conn: &connStub{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &destinations{}
			p := newProxy(ProxyOptions{}, d)
			var sc scratch
			p.handle(&inbound{data: []byte(msg), local: endpoint{tc.transport, netip.MustParseAddrPort("127.0.0.1:5060")},
				src: src, conn: tc.conn}, &sc)
			if len(d.to) != 1 || !strings.HasPrefix(string(d.sent[0]), "SIP/2.0 483 ") {
				t.Fatalf("sent %q to %+v, want one 483", d.sent, d.to)
			}
			want := destination{endpoint: endpoint{tc.transport, src}, conn: tc.conn}
			if d.to[0] != want {
				t.Errorf("answered to %+v, want %+v", d.to[0], want)
			}
		})
	}
}
