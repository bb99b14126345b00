package sip

import (
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"clb/config"
	"clb/netpark/netparktest"
)

// Idle WebSocket connections are parked (netpark) as stream ones are: no
// goroutine, no buffer, and still pinged, closed at their idle timeout,
// reached by their flow token and counted.

func (c *cluster) wsParked(token string) int {
	return c.server.transport(token).(*wsTransport).park.Len()
}

func (c *cluster) wsConns(token string) int {
	t := c.server.transport(token).(*wsTransport)
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

func wsParkCluster(t *testing.T, w config.WS, tls bool) *cluster {
	netparktest.SkipUnsupported(t)
	return newCluster(t, clusterOptions{n: 1, ws: &w, tls: tls, linger: time.Millisecond})
}

// parkedWS is a cluster parking WebSocket connections at once and a
// connection to its transport tr listener, parked.
func parkedWS(t *testing.T, tr string) (*cluster, net.Conn, io.Reader) {
	t.Helper()
	c := wsParkCluster(t, config.WS{}, tr == "wss")
	conn, r, err := c.wsDial(tr, netip.AddrPort{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	netparktest.Until(t, "the connection is parked", func() bool { return c.wsParked(tr) == 1 })
	return c, conn, r
}

// hopless is an INVITE with Max-Forwards 0 from conn, which clb answers
// 483 itself: a message parsed and answered by the proxy.
func hopless(c *cluster, transport string, conn net.Conn, callID string) []byte {
	inv := newInvite(&peer{transport: transport, addr: localAddr(conn.LocalAddr())}, c.clb(transport), "idle", callID)
	mf := gosip.MaxForwardsHeader(0)
	inv.ReplaceHeader(&mf)
	return []byte(inv.String())
}

// expect483 reads clb's next frame: a 483.
func expect483(t *testing.T, conn net.Conn, r io.Reader) {
	t.Helper()
	f := readFrame(t, conn, r)
	if f.Header.OpCode != ws.OpText || !strings.HasPrefix(string(f.Payload), "SIP/2.0 483 ") {
		t.Fatalf("got %v %q; want a 483", f.Header.OpCode, f.Payload)
	}
}

func TestWSParkedServedAgain(t *testing.T) {
	for _, tr := range []string{"ws", "wss"} {
		t.Run(tr, func(t *testing.T) {
			c, conn, r := parkedWS(t, tr)
			for i := range 3 {
				netparktest.Until(t, "the connection is parked", func() bool { return c.wsParked(tr) == 1 })
				if err := wsutil.WriteClientText(conn, hopless(c, tr, conn, "ws-parked-"+string(rune('a'+i)))); err != nil {
					t.Fatal(err)
				}
				expect483(t, conn, r)
			}
			netparktest.Until(t, "the connection is parked", func() bool { return c.wsParked(tr) == 1 })
			if n := c.wsConns(tr); n != 1 {
				t.Fatalf("%d connections in the table, want 1", n)
			}
		})
	}
}

// An instance's BYE reaches a phone whose connection is parked, by its
// flow token, without waking it; the phone's answer wakes it.
func TestWSParkedCalleeBye(t *testing.T) {
	c := wsParkCluster(t, config.WS{}, false)
	phone := c.wsPhone("phone", "ws")
	d, _ := c.call(phone, "bob")
	netparktest.Until(t, "the phone's connection is parked", func() bool { return c.wsParked("ws") == 1 })
	uas := c.instances[d.instance]
	uas.send(inDialog(uas, d, gosip.BYE, false), c.udp)
	bye := phone.recvRequest("BYE")
	if n := c.wsParked("ws"); n != 1 {
		t.Fatalf("%d parked once the BYE was delivered, want 1: a write does not wake", n)
	}
	phone.send(respond(phone, bye, 200, "OK", ""), c.ws)
	uas.recvResponse(200)
	netparktest.Until(t, "the phone's connection is parked again", func() bool { return c.wsParked("ws") == 1 })
	c.quiet()
}

// A parked connection is pinged at ws.ping_interval and parked again; one
// that answers stays open past ws.idle_timeout, parked between pings, and
// one that does not is closed (1001) once it has been silent for
// idle_timeout.
func TestWSParkedIdle(t *testing.T) {
	const idle = time.Second
	c := wsParkCluster(t, config.WS{PingInterval: 200 * time.Millisecond, IdleTimeout: idle}, false)
	t.Run("answers the pings", func(t *testing.T) {
		conn, r, err := c.wsDial("ws", netip.AddrPort{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		for time.Since(start) < 2*idle {
			netparktest.Until(t, "the connection is parked", func() bool { return c.wsParked("ws") == 1 })
			f := readFrame(t, conn, r)
			if f.Header.OpCode != ws.OpPing {
				t.Fatalf("frame %v, want a ping", f.Header.OpCode)
			}
			writeFrame(t, conn, ws.NewPongFrame(f.Payload))
		}
		if c.server.connWith("ws", localAddr(conn.LocalAddr())) == nil {
			t.Fatal("the connection answering pings was closed")
		}
	})
	t.Run("silent", func(t *testing.T) {
		start := time.Now() // clb's idle time starts after this
		conn, r, err := c.wsDial("ws", netip.AddrPort{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		netparktest.Until(t, "the connection is parked", func() bool { return c.wsParked("ws") >= 1 })
		if f := readFrame(t, conn, r); f.Header.OpCode != ws.OpPing {
			t.Fatalf("frame %v, want a ping first", f.Header.OpCode)
		}
		expectClosed(t, conn, r, closeGoingAway)
		if waited := time.Since(start); waited < idle {
			t.Fatalf("closed after %v silent, before the idle timeout %v", waited, idle)
		}
		gone := localAddr(conn.LocalAddr())
		netparktest.Until(t, "the connection is gone from the table", func() bool { return c.server.connWith("ws", gone) == nil })
	})
}

// Parked connections count against ws.max_connections; one closed by
// its client while parked is let go, and its place taken again.
func TestWSParkedCounted(t *testing.T) {
	c := wsParkCluster(t, config.WS{MaxConnections: 2}, false)
	var open []net.Conn
	for range 2 {
		conn, _, err := c.wsDial("ws", netip.AddrPort{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		open = append(open, conn)
	}
	netparktest.Until(t, "both are parked", func() bool { return c.wsParked("ws") == 2 })
	if conn, _, err := c.wsDial("ws", netip.AddrPort{}, nil); err == nil {
		conn.Close()
		t.Fatal("a third connection over ws.max_connections 2 was taken while two were parked")
	}
	open[0].Close()
	netparktest.Until(t, "the closed one is gone", func() bool { return c.wsConns("ws") == 1 })
	conn, _, err := c.wsDial("ws", netip.AddrPort{}, nil)
	if err != nil {
		t.Fatalf("a connection under the bound again: %v", err)
	}
	conn.Close()
}

// Shutdown closes parked connections with 1001 (going away).
func TestWSShutdownClosesParked(t *testing.T) {
	for _, tr := range []string{"ws", "wss"} {
		t.Run(tr, func(t *testing.T) {
			c := wsParkCluster(t, config.WS{}, tr == "wss")
			type open struct {
				conn net.Conn
				r    io.Reader
			}
			var conns []open
			for range 3 {
				conn, r, err := c.wsDial(tr, netip.AddrPort{}, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conns = append(conns, open{conn, r})
			}
			netparktest.Until(t, "all are parked", func() bool { return c.wsParked(tr) == 3 })
			stopped := make(chan struct{})
			go func() { c.stop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return with parked connections")
			}
			for _, o := range conns {
				expectClosed(t, o.conn, o.r, closeGoingAway)
			}
		})
	}
}

// 1,000 idle WebSocket connections hold no goroutine each.
func TestWSIdleNoGoroutines(t *testing.T) {
	c := wsParkCluster(t, config.WS{}, false)
	warm, _, err := c.wsDial("ws", netip.AddrPort{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer warm.Close()
	netparktest.Until(t, "parked", func() bool { return c.wsParked("ws") == 1 })
	before := runtime.NumGoroutine()
	for range 1000 {
		conn, _, err := c.wsDial("ws", netip.AddrPort{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
	}
	netparktest.Until(t, "all parked", func() bool { return c.wsParked("ws") == 1001 })
	if n := runtime.NumGoroutine(); n > before+20 {
		t.Fatalf("%d goroutines with 1,001 idle connections, %d with one", n, before)
	}
}
