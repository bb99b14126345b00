package sip

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"clb/netpark/netparktest"
)

// Two messages in one segment (so both in clb's first read, or, over TLS,
// the second left in crypto/tls's buffer) are both answered before the
// connection parks, and a message whose first bytes wake it is read whole.
func TestWSParkingRaces(t *testing.T) {
	for _, tr := range []string{"ws", "wss"} {
		t.Run(tr, func(t *testing.T) {
			c, conn, r := parkedWS(t, tr)
			frame := func(callID string) []byte {
				var b strings.Builder
				if err := ws.WriteFrame(&b, ws.MaskFrame(ws.NewTextFrame(hopless(c, tr, conn, callID)))); err != nil {
					t.Fatal(err)
				}
				return []byte(b.String())
			}
			// Two writes (over TLS, two records) corked into one segment.
			netparktest.Cork(t, conn, 1)
			for _, id := range []string{"race-1", "race-2"} {
				if _, err := conn.Write(frame(id)); err != nil {
					t.Fatal(err)
				}
			}
			netparktest.Cork(t, conn, 0)
			expect483(t, conn, r)
			expect483(t, conn, r)
			netparktest.Until(t, "the connection is parked", func() bool { return c.wsParked(tr) == 1 })
			split := frame("race-split")
			if _, err := conn.Write(split[:5]); err != nil {
				t.Fatal(err)
			}
			netparktest.Until(t, "the connection is woken", func() bool { return c.wsParked(tr) == 0 })
			if _, err := conn.Write(split[5:]); err != nil {
				t.Fatal(err)
			}
			expect483(t, conn, r)
		})
	}
}

// Two keep-alives in two TLS records of one segment: crypto/tls reads
// both from the socket with the first, so the second is answered from its
// buffer, not left there when the connection is parked.
func TestStreamParkedTLSPipelined(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, tls: true, linger: time.Hour})
	conn, err := tlsDial(c)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	netparktest.Cork(t, conn, 1)
	for range 2 {
		if _, err := io.WriteString(conn, "\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	netparktest.Cork(t, conn, 0)
	pongs := make([]byte, 4)
	if _, err := io.ReadFull(conn, pongs); err != nil || string(pongs) != "\r\n\r\n" {
		t.Fatalf("pongs %q, %v; want two", pongs, err)
	}
}
