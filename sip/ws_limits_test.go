package sip

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"

	"clb/config"
)

// readFrame reads the next frame clb sends, within wait.
func readFrame(t *testing.T, conn net.Conn, r io.Reader) ws.Frame {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	f, err := ws.ReadFrame(r)
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	return f
}

func closeCode(f ws.Frame) int {
	if len(f.Payload) < 2 {
		return 0
	}
	return int(binary.BigEndian.Uint16(f.Payload))
}

// expectClosed reads until clb closes the connection: a close frame with
// code, then the end of the stream.
func expectClosed(t *testing.T, conn net.Conn, r io.Reader, code int) {
	t.Helper()
	for {
		f := readFrame(t, conn, r)
		if f.Header.OpCode == ws.OpClose {
			if got := closeCode(f); got != code {
				t.Fatalf("close frame with %d, want %d", got, code)
			}
			break
		}
	}
	if _, err := ws.ReadFrame(r); err == nil {
		t.Fatal("a frame after the close frame")
	}
}

func writeFrame(t *testing.T, conn net.Conn, f ws.Frame) {
	t.Helper()
	if err := ws.WriteFrame(conn, ws.MaskFrame(f)); err != nil {
		t.Fatal(err)
	}
}

// TestWSIdle: clb pings a connection that has been silent for
// ws.ping_interval; one that answers stays open past ws.idle_timeout, one
// that does not is closed (1001) once it has been silent for idle_timeout.
func TestWSIdle(t *testing.T) {
	// A pong may come late by most of a second on a loaded machine
	// before the idle timeout is reached.
	c := wsCluster(t, config.WS{PingInterval: 100 * time.Millisecond, IdleTimeout: time.Second}, false)
	t.Run("answers the pings", func(t *testing.T) {
		conn, r, err := c.wsDial("ws", netip.AddrPort{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Fifteen pings, each answered: fifteen ping intervals, more than
		// the idle timeout, and still open.
		for range 15 {
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
		conn, r, err := c.wsDial("ws", netip.AddrPort{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if f := readFrame(t, conn, r); f.Header.OpCode != ws.OpPing {
			t.Fatalf("frame %v, want a ping first", f.Header.OpCode)
		}
		expectClosed(t, conn, r, closeGoingAway)
	})
}

// TestWSMaxConnections: ws.max_connections bounds the open connections: one
// over it is closed before its handshake, and once one closes a new one is
// taken again.
func TestWSMaxConnections(t *testing.T) {
	c := wsCluster(t, config.WS{MaxConnections: 2}, false)
	var open []net.Conn
	for range 2 {
		conn, _, err := c.wsDial("ws", netip.AddrPort{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		open = append(open, conn)
	}
	if conn, _, err := c.wsDial("ws", netip.AddrPort{}, nil); err == nil {
		conn.Close()
		t.Fatal("a third connection over ws.max_connections 2 was taken")
	}
	gone := localAddr(open[0].LocalAddr())
	open[0].Close()
	until(t, "clb lets the closed connection go", func() bool { return c.server.connWith("ws", gone) == nil })
	conn, _, err := c.wsDial("ws", netip.AddrPort{}, nil)
	if err != nil {
		t.Fatalf("a connection under the bound again: %v", err)
	}
	conn.Close()
}

// TestWSFrames: a SIP message may come in fragments or in a binary frame
// and reaches the instance whole; a client's ping is answered with its
// payload; a message over ws.max_message, whole or in fragments, and an
// unmasked frame close the connection (1009, 1002).
func TestWSFrames(t *testing.T) {
	c := wsCluster(t, config.WS{MaxMessage: 2048}, false)
	dial := func() (net.Conn, io.Reader) {
		conn, r, err := c.wsDial("ws", netip.AddrPort{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, r
	}
	conn, r := dial()
	phone := &peer{t: t, name: "phone", transport: "ws", addr: localAddr(conn.LocalAddr())}
	invite := []byte(newInvite(phone, c.ws, "frag", "call-frag").String())

	writeFrame(t, conn, ws.NewFrame(ws.OpText, false, invite[:40]))
	writeFrame(t, conn, ws.NewFrame(ws.OpContinuation, false, invite[40:100]))
	writeFrame(t, conn, ws.NewFrame(ws.OpContinuation, true, invite[100:]))
	if _, got := c.recvAny("INVITE"); got.CallID().Value() != "call-frag" {
		t.Fatalf("INVITE %s", got.CallID().Value())
	}
	writeFrame(t, conn, ws.NewBinaryFrame([]byte(newInvite(phone, c.ws, "bin", "call-bin").String())))
	if _, got := c.recvAny("INVITE"); got.CallID().Value() != "call-bin" {
		t.Fatalf("INVITE %s", got.CallID().Value())
	}
	writeFrame(t, conn, ws.NewPingFrame([]byte("hello")))
	if f := readFrame(t, conn, r); f.Header.OpCode != ws.OpPong || string(f.Payload) != "hello" {
		t.Fatalf("answer to a ping: %v %q", f.Header.OpCode, f.Payload)
	}

	big := make([]byte, 3000)
	for i := range big {
		big[i] = 'a'
	}
	conn, r = dial()
	writeFrame(t, conn, ws.NewTextFrame(big))
	expectClosed(t, conn, r, closeTooBig)
	conn, r = dial()
	writeFrame(t, conn, ws.NewFrame(ws.OpText, false, big[:1500]))
	writeFrame(t, conn, ws.NewFrame(ws.OpContinuation, true, big[1500:]))
	expectClosed(t, conn, r, closeTooBig)
	conn, r = dial()
	if err := ws.WriteFrame(conn, ws.NewTextFrame(invite)); err != nil { // unmasked
		t.Fatal(err)
	}
	expectClosed(t, conn, r, closeProtocol)
	c.quiet()
}

// TestWSS: a phone on wss:// (clb's test certificate) calls through clb to
// UDP instances: Via WSS and Record-Route transport=wss towards it; the
// instance's BYE reaches it over its TLS WebSocket by the flow token.
func TestWSS(t *testing.T) {
	c := wsCluster(t, config.WS{}, true)
	phone := c.wsPhone("phone", "wss")
	d, inv := c.call(phone, "carol")
	wsRoutes(t, inv, "wss", "udp", d.fromTag+d.callID)
	uas := c.instances[d.instance]
	uas.send(inDialog(uas, d, gosip.BYE, false), c.udp)
	bye := phone.recvRequest("BYE")
	if v := bye.GetHeaders("via")[0].(*gosip.ViaHeader); !isClbVia(v) || v.Transport != "WSS" || v.Port != int(c.wss.Port()) {
		t.Errorf("BYE at the phone: top Via %v, want clb's WSS listener %v", v, c.wss)
	}
	phone.send(respond(phone, bye, 200, "OK", ""), c.wss)
	uas.recvResponse(200)
	c.quiet()
}
