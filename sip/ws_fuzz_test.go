package sip

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
)

// TestFlowToken: a token names its connection and nothing else: altered
// in any byte, for another transport or under another key it is refused.
func TestFlowToken(t *testing.T) {
	k := newFlowKey("")
	for _, f := range []flowID{
		{"ws", 1, netip.MustParseAddrPort("192.0.2.1:5062")},
		{"wss", 1<<64 - 1, netip.MustParseAddrPort("[2001:db8::1]:443")},
	} {
		tok := k.token(f)
		if got, ok := k.parse(f.transport, tok); !ok || got != f {
			t.Fatalf("%+v: token %s parses as %+v, %v", f, tok, got, ok)
		}
		for i := range tok {
			for _, c := range []byte("AZaz09-_") {
				if c == tok[i] {
					continue
				}
				bad := []byte(tok)
				bad[i] = c
				if _, ok := k.parse(f.transport, string(bad)); ok {
					t.Fatalf("%s altered at %d to %s is taken", tok, i, bad)
				}
			}
		}
		other := map[string]string{"ws": "wss", "wss": "ws"}[f.transport]
		if _, ok := k.parse(other, tok); ok {
			t.Errorf("a %s token taken for %s", f.transport, other)
		}
		if _, ok := newFlowKey("").parse(f.transport, tok); ok {
			t.Error("a token taken under another key")
		}
		if _, ok := newFlowKey("a shared secret of thirty-two characters").parse(f.transport, tok); ok {
			t.Error("a token taken under another key")
		}
	}
	shared := "a shared secret of thirty-two characters"
	f := flowID{"wss", 7, netip.MustParseAddrPort("192.0.2.9:40000")}
	if _, ok := newFlowKey(shared).parse("wss", newFlowKey(shared).token(f)); !ok {
		t.Error("two nodes with the same tls.flow_key do not take each other's tokens")
	}
}

// FuzzFlowToken: no input panics the token check, and what it takes is
// exactly a token clb would make (one spelling per connection).
func FuzzFlowToken(f *testing.F) {
	k := &flowKey{key: []byte("fuzz key")}
	f.Add("ws", k.token(flowID{"ws", 42, netip.MustParseAddrPort("127.0.0.1:5060")}))
	f.Add("wss", k.token(flowID{"wss", 1, netip.MustParseAddrPort("[::1]:1")}))
	f.Add("ws", "")
	f.Add("ws", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, transport, token string) {
		id, ok := k.parse(transport, token)
		if ok && k.token(id) != token {
			t.Fatalf("took %q for %+v, whose token is %q", token, id, k.token(id))
		}
	})
}

// discardConn is a connection that takes every write and reads nothing.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error)      { return len(b), nil }
func (discardConn) Close() error                     { return nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzWSFrames: any bytes from a client go through clb's frame reader
// (parseFrame and the message assembly of wsTransport.frame, handing
// messages to a real proxy) without a panic, never use more than they
// have, and a frame header parseFrame takes is within its bounds.
func FuzzWSFrames(f *testing.F) {
	mask := func(fr ws.Frame) []byte { return ws.MustCompileFrame(ws.MaskFrame(fr)) }
	inv := []byte("OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
	f.Add(mask(ws.NewTextFrame(inv)))
	f.Add(append(mask(ws.NewFrame(ws.OpText, false, inv[:10])), mask(ws.NewFrame(ws.OpContinuation, true, inv[10:]))...))
	f.Add(mask(ws.NewPingFrame([]byte("x"))))
	f.Add(mask(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, ""))))
	f.Add([]byte{0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0x10, 0})
	in := []config.Instance{{Name: "a", Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1", Port: 5071}}}}
	bal, err := balancer.New(in, loadfactor.DefaultParams())
	if err != nil {
		f.Fatal(err)
	}
	const max = 4096
	f.Fuzz(func(t *testing.T, data []byte) {
		p := newProxy(ProxyOptions{Balancer: bal, Instances: in}, &recorder{})
		tr := &wsTransport{token: "ws", proxy: p}
		tr.ws.Store(&config.WS{MaxMessage: max})
		c := &wsConn{c: discardConn{}, remote: netip.MustParseAddrPort("192.0.2.1:5062"), local: endpoint{"ws", netip.MustParseAddrPort("127.0.0.1:80")}}
		var msg wsMessage
		var sc scratch
		b := bytes.Clone(data)
		for len(b) > 0 {
			if fr, st, _ := parseFrame(b, max); st == frameOK {
				if fr.header < 6 || fr.header > maxFrameHeader || fr.length > max || (fr.op >= opClose && fr.length > maxControlFrame) {
					t.Fatalf("frame header %+v out of bounds", fr)
				}
			}
			used, ok := tr.frame(c, b, &msg, &sc)
			if used > len(b) {
				t.Fatalf("used %d of %d bytes", used, len(b))
			}
			if !ok || used == 0 {
				break
			}
			b = b[used:]
		}
		if len(msg.data) > max {
			t.Fatalf("assembled %d bytes, over %d", len(msg.data), max)
		}
	})
}
