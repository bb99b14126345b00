package rawtcp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// wait bounds what a test waits for, on a loaded machine.
const wait = 5 * time.Second

// rawPair is a loopback TCP connection, one end wrapped by Wrap.
func rawPair(t *testing.T) (raw net.Conn, peer net.Conn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	raw = Wrap(c)
	if _, ok := raw.(*conn); !ok {
		t.Fatalf("Wrap gave %T", raw)
	}
	t.Cleanup(func() { raw.Close() })
	return raw, peer
}

// TestRawTCPConn: the raw connection reads and writes what a TCPConn does,
// a write larger than the socket buffers whole, and fails as one: a
// deadline with os.ErrDeadlineExceeded, the peer's close with io.EOF, its
// own close with net.ErrClosed.
func TestRawTCPConn(t *testing.T) {
	raw, peer := rawPair(t)
	if err := raw.SetDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: many EAGAINs
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		got <- b
	}()
	if n, err := raw.Write(big); n != len(big) || err != nil {
		t.Fatalf("write: %d of %d, %v", n, len(big), err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not what was written", len(b))
	}
	if _, err := peer.Write([]byte("INVITE")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := io.ReadFull(raw, buf[:6]); err != nil || string(buf[:n]) != "INVITE" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if err := raw.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	if err := raw.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	if n, err := raw.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed: %d, %v", n, err)
	}
	raw.Close()
	if _, err := raw.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}
