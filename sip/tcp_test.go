package sip

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

// dialCLB opens a raw TCP connection to clb's listener.
func dialCLB(t *testing.T, c *cluster) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", c.tcp.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestTCPKeepAlive: a CRLFCRLF ping between messages gets a CRLF pong
// (RFC 5626 3.5.1), and the connection goes on carrying SIP.
func TestTCPKeepAlive(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, transport: "tcp"})
	conn := dialCLB(t, c)
	if _, err := conn.Write([]byte("\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	pong := make([]byte, 2)
	if _, err := io.ReadFull(conn, pong); err != nil || string(pong) != "\r\n" {
		t.Fatalf("pong %q, %v", pong, err)
	}
	// A message split over two writes, after the ping.
	inv := newInvite(&peer{transport: "tcp", addr: localAddr(conn.LocalAddr())}, c.tcp, "kai", "ka-1")
	mf := gosip.MaxForwardsHeader(0)
	inv.ReplaceHeader(&mf)
	data := []byte(inv.String())
	for _, part := range [][]byte{data[:40], data[40:]} {
		if _, err := conn.Write(part); err != nil {
			t.Fatal(err)
		}
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SIP/2.0 483 ") {
		t.Fatalf("after the ping: %q, %v", line, err)
	}
}

// TestTCPBadFraming: a stream whose message length cannot be told (two
// Content-Length fields, RFC 4475 mcl01) is answered with 400 and closed;
// nothing reaches an instance.
func TestTCPBadFraming(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, transport: "tcp"})
	for _, tc := range []struct {
		name, lengths string
	}{
		{"two Content-Length", "Content-Length: 0\r\nContent-Length: 5\r\n"},
		{"negative", "Content-Length: -999\r\n"},
		{"missing", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialCLB(t, c)
			msg := "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKf1\r\n" +
				"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: frame\r\nCSeq: 1 OPTIONS\r\n" + tc.lengths + "\r\nhello"
			if _, err := conn.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(conn) // to EOF: clb closes
			if err != nil && !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read: %v", err)
			}
			if !bytes.HasPrefix(got, []byte("SIP/2.0 400 ")) {
				t.Fatalf("got %q, want a 400 and the connection closed", got)
			}
		})
	}
	c.quiet()
}

// TestTCPOversize: a message head that never ends is not buffered past the
// limit: the connection is closed.
func TestTCPOversize(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, transport: "tcp"})
	conn := dialCLB(t, c)
	junk := bytes.Repeat([]byte("X-Junk: "+strings.Repeat("j", 1000)+"\r\n"), 80) // > 64 KiB, no end
	_, _ = conn.Write([]byte("OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n"))
	_, _ = conn.Write(junk)
	if _, err := io.ReadAll(conn); err != nil && !errors.Is(err, net.ErrClosed) {
		// A reset is as good as a close here.
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("clb kept the connection open")
		}
	}
}
