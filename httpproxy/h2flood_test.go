package httpproxy

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Raw HTTP/2 frames (RFC 9113 4.1), for clients that misbehave on purpose.
const (
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	frameGoAway       = 0x7
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagEndHeaders = 0x4
)

// h2Conn is a raw HTTP/2 client connection to clb: preface and SETTINGS
// sent, frames written by hand.
type h2Conn struct {
	t *testing.T
	c *tls.Conn
	w *bufio.Writer
}

func dialH2(t *testing.T, c *cluster) *h2Conn {
	t.Helper()
	cfg := c.ca.ClientConfig()
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.Dial("tcp", c.server.Addr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q", p)
	}
	h := &h2Conn{t: t, c: conn, w: bufio.NewWriterSize(conn, 64<<10)}
	_, _ = h.w.WriteString("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	h.frame(frameSettings, 0, 0, nil)
	return h
}

// frame buffers one frame; false once the connection has failed.
func (h *h2Conn) frame(typ, flags byte, stream uint32, payload []byte) bool {
	var hdr [9]byte
	hdr[0], hdr[1], hdr[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	hdr[3], hdr[4] = typ, flags
	binary.BigEndian.PutUint32(hdr[5:], stream)
	if _, err := h.w.Write(hdr[:]); err != nil {
		return false
	}
	_, err := h.w.Write(payload)
	return err == nil
}

func (h *h2Conn) flush() bool { return h.w.Flush() == nil }

// requestBlock is the HPACK block of GET https://authority/ (static table
// entries, and the authority as a literal without indexing).
func requestBlock(authority string) []byte {
	b := []byte{0x82, 0x87, 0x84, 0x01, byte(len(authority))}
	return append(b, authority...)
}

// literal is an HPACK literal field without indexing, with a new name;
// name and value shorter than 127 bytes.
func literal(name, value string) []byte {
	b := []byte{0x00, byte(len(name))}
	b = append(b, name...)
	b = append(b, byte(len(value)))
	return append(b, value...)
}

// closedByServer reads frames until the server sends GOAWAY or closes the
// connection; false if the connection stays open for `wait`.
func (h *h2Conn) closedByServer(wait time.Duration) bool {
	_ = h.c.SetReadDeadline(time.Now().Add(wait))
	r := bufio.NewReader(h.c)
	var hdr [9]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		if _, err := r.Discard(n); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
		if hdr[3] == frameGoAway {
			return true
		}
	}
}

// servedMeanwhile checks that another client's HTTP/2 requests succeed
// while flood runs, and after it.
func servedMeanwhile(t *testing.T, c *cluster, flood func()) {
	t.Helper()
	other := c.client()
	done := make(chan struct{})
	go func() { defer close(done); flood() }()
	served := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		res := c.get(other, "/meanwhile", "Cookie", "CLBKEY=other")
		if res.StatusCode != 200 || res.ProtoMajor != 2 {
			t.Fatalf("another client during the flood: %d %s", res.StatusCode, res.Proto)
		}
		served++
	}
	if res := c.get(c.client(), "/after", "Cookie", "CLBKEY=after"); res.StatusCode != 200 {
		t.Fatalf("a new client after the flood: %d", res.StatusCode)
	}
	t.Logf("%d requests of another client served during the flood", served)
}

// TestH2RapidReset: a client opening streams and resetting them at once
// (CVE-2023-44487), 20,000 of them as fast as it can write, does not stop
// clb from serving another client, and does not get an instance request
// per stream: the handlers it can start are bounded by the stream limit.
func TestH2RapidReset(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3, https: true})
	const streams = 20_000
	servedMeanwhile(t, c, func() {
		h := dialH2(t, c)
		block := requestBlock("127.0.0.1")
		var rst [4]byte
		binary.BigEndian.PutUint32(rst[:], 0x8) // CANCEL
		for i := range streams {
			id := uint32(2*i + 1)
			if !h.frame(frameHeaders, flagEndHeaders|flagEndStream, id, block) || !h.frame(frameRSTStream, 0, id, rst[:]) {
				return // clb closed the connection: fine
			}
			if i%100 == 99 && !h.flush() {
				return
			}
		}
		h.flush()
		h.closedByServer(time.Second) // drain what clb answers
	})
	if n := c.total(); n >= streams {
		t.Errorf("the instances got %d requests for %d reset streams", n, streams)
	}
}

// TestH2ContinuationFlood: HEADERS without END_HEADERS followed by endless
// CONTINUATION frames (the 2024 CONTINUATION flood, CVE-2024-27316 and
// kin) are cut once the header list passes http.max_header_bytes: clb
// ends that connection long before the flood ends, and serves another
// client throughout.
func TestH2ContinuationFlood(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3, https: true})
	const frames = 100_000 // ~11 MB of header fields, against a 32 KiB limit
	var closed bool
	sent := 0
	servedMeanwhile(t, c, func() {
		h := dialH2(t, c)
		h.frame(frameHeaders, 0, 1, requestBlock("127.0.0.1"))
		field := literal("x-flood", string(make([]byte, 100)))
		for i := range field[10:] {
			field[10+i] = 'a'
		}
		writes := make(chan struct{})
		go func() {
			defer close(writes)
			for sent = 0; sent < frames; sent++ {
				if !h.frame(frameContinuation, 0, 1, field) {
					return
				}
			}
			h.flush()
		}()
		closed = h.closedByServer(10 * time.Second)
		h.c.Close() // stops the writer if clb has not
		<-writes
	})
	if !closed {
		t.Fatalf("clb kept the flooding connection open")
	}
	if sent >= frames {
		t.Errorf("clb read all %d CONTINUATION frames before closing", frames)
	}
	t.Logf("connection ended after %d CONTINUATION frames written", sent)
}
