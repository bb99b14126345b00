package sip

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"clb/config"
)

func TestPick(t *testing.T) {
	v4 := endpoint{"udp", netip.MustParseAddrPort("127.0.0.1:5060")}
	v6 := endpoint{"udp", netip.MustParseAddrPort("[::1]:5060")}
	for _, tc := range []struct {
		name   string
		selves []endpoint
		to     string
		want   int
	}{
		{name: "none", to: "192.0.2.1", want: -1},
		{name: "IPv4 to IPv4", selves: []endpoint{v6, v4}, to: "192.0.2.1", want: 1},
		{name: "IPv4-mapped to IPv4", selves: []endpoint{v6, v4}, to: "::ffff:192.0.2.1", want: 1},
		{name: "IPv6 to IPv6", selves: []endpoint{v4, v6}, to: "2001:db8::1", want: 1},
		{name: "no listener of the family: the first", selves: []endpoint{v4}, to: "2001:db8::1", want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pick(tc.selves, netip.MustParseAddr(tc.to)); got != tc.want {
				t.Errorf("pick(%v, %s) = %d, want %d", tc.selves, tc.to, got, tc.want)
			}
		})
	}
}

// TestServerTransports: every listener goes to the transport it names,
// Listeners lists UDP first whatever the configuration's order, a
// transport clb does not have is refused, and a destination over it is not
// sent to.
func TestServerTransports(t *testing.T) {
	addr := func(transport string) config.SIPAddr {
		return config.SIPAddr{Endpoint: config.Endpoint{Transport: transport, Host: "127.0.0.1"}}
	}
	srv, err := NewServer(ServerOptions{Listen: []config.SIPAddr{addr("tcp"), addr("udp"), addr("tcp")}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.closeTransports()
	got := srv.Listeners()
	if len(got) != 3 || !strings.HasPrefix(got[0], "udp://127.0.0.1:") || !strings.HasPrefix(got[1], "tcp://127.0.0.1:") ||
		!strings.HasPrefix(got[2], "tcp://127.0.0.1:") || got[1] == got[2] {
		t.Errorf("Listeners() = %q, want one UDP, then two TCP", got)
	}
	for _, l := range got {
		transport, hostPort, _ := strings.Cut(l, "://")
		a := netip.MustParseAddrPort(hostPort)
		if self, ok := srv.listener(transport, a.Addr()); !ok || self.transport != transport || !srv.isSelf(a) {
			t.Errorf("%s: listener %+v, %v; isSelf %v", l, self, ok, srv.isSelf(a))
		}
	}
	if _, ok := srv.listener("sctp", netip.MustParseAddr("127.0.0.1")); ok {
		t.Error("a listener for sctp")
	}
	if err := srv.send(destination{endpoint: endpoint{"sctp", netip.MustParseAddrPort("127.0.0.1:5060")}}, nil); err == nil {
		t.Error("sent over sctp")
	}
	if _, err := NewServer(ServerOptions{Listen: []config.SIPAddr{addr("sctp")}}); err == nil {
		t.Error("a listener on sctp was accepted")
	}
	if srv.connWith("tcp", netip.MustParseAddrPort("127.0.0.1:1")) != nil {
		t.Error("a connection with a peer never seen")
	}
}

// goneConn is a connection that has closed.
type goneConn struct{}

func (goneConn) write([]byte) error { return errors.New("gone") }

// TestSendFallsBackFromClosedConn: a message for a connection that has gone
// goes over its destination's transport instead (RFC 3261 18.2.2): to the
// address, on UDP here.
func TestSendFallsBackFromClosedConn(t *testing.T) {
	srv, err := NewServer(ServerOptions{Listen: []config.SIPAddr{{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.closeTransports()
	p := newPeer(t, "phone", "udp", nil)
	if err := srv.send(destination{endpoint: endpoint{"udp", p.addr}, conn: goneConn{}}, []byte("SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if e := p.recvEnvelope(); !strings.HasPrefix(string(e.raw), "SIP/2.0 200 OK") {
		t.Errorf("got %q", e.raw)
	}
}

// TestServerSendAllocatesNothing: finding the listener and sending a
// datagram, which the Server does for every message, allocate nothing (the
// proxy's own work is BenchmarkCall's).
func TestServerSendAllocatesNothing(t *testing.T) {
	srv, err := NewServer(ServerOptions{Listen: []config.SIPAddr{{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.closeTransports()
	// A sink nothing reads: a peer's reader would allocate for each
	// datagram while the allocations are counted (they are the process's).
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	msg := []byte("SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
	dst := destination{endpoint: endpoint{"udp", to}}
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := srv.listener("udp", to.Addr()); !ok {
			t.Fatal("no UDP listener")
		}
		if err := srv.send(dst, msg); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per message", allocs)
	}
}
