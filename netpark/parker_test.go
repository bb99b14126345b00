//go:build linux

package netpark

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// parker starts a Parker with tick and stops it at the test's end.
func parker(t *testing.T, tick time.Duration) *Parker {
	t.Helper()
	p, err := New(Options{Tick: tick})
	if errors.Is(err, ErrUnsupported) {
		t.Skip("no epoll here")
	}
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.Run(); close(done) }()
	t.Cleanup(func() { p.Close(); <-done })
	return p
}

// pair is a connected TCP pair on loopback: server side, client side.
func pair(t *testing.T, ln net.Listener) (net.Conn, net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return server, client
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// outcome is which function a parked connection got.
type outcome string

func park(t *testing.T, p *Parker, c net.Conn, deadline time.Time) <-chan outcome {
	t.Helper()
	got := make(chan outcome, 2)
	if err := p.Park(c, deadline, func() { got <- "wake" }, func() { got <- "expire" }); err != nil {
		t.Fatal(err)
	}
	return got
}

func expect(t *testing.T, got <-chan outcome, want outcome) {
	t.Helper()
	select {
	case o := <-got:
		if o != want {
			t.Fatalf("got %s, want %s", o, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s within 5 s", want)
	}
}

func TestWakeOnData(t *testing.T) {
	p := parker(t, time.Second)
	server, client := pair(t, listen(t))
	got := park(t, p, server, time.Time{})
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "wake")
	b := make([]byte, 5)
	if _, err := io.ReadFull(server, b); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v after the wake", b, err)
	}
	// Parked again, it wakes again: the one-shot registration was removed.
	got = park(t, p, server, time.Time{})
	client.Write([]byte("again"))
	expect(t, got, "wake")
	if p.Len() != 0 {
		t.Fatalf("%d still parked", p.Len())
	}
}

// Bytes that came before the Park (pipelined while the owner was parking)
// wake it at once.
func TestWakeOnDataAlreadyThere(t *testing.T) {
	p := parker(t, time.Second)
	server, client := pair(t, listen(t))
	client.Write([]byte("x"))
	// Wait (peeking, so the byte stays) until it is in the server's socket.
	rc, _ := server.(*net.TCPConn).SyscallConn()
	deadline := time.Now().Add(5 * time.Second)
	for !readable(rc) {
		if time.Now().After(deadline) {
			t.Fatal("the byte never arrived")
		}
		runtime.Gosched()
	}
	expect(t, park(t, p, server, time.Time{}), "wake")
}

func TestWakeOnPeerClose(t *testing.T) {
	p := parker(t, time.Second)
	server, client := pair(t, listen(t))
	got := park(t, p, server, time.Time{})
	client.Close()
	expect(t, got, "wake")
	if n, err := server.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read %d, %v: want EOF", n, err)
	}
}

func TestExpireAtDeadline(t *testing.T) {
	p := parker(t, 10*time.Millisecond)
	server, _ := pair(t, listen(t))
	start := time.Now()
	got := park(t, p, server, start.Add(50*time.Millisecond))
	expect(t, got, "expire")
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("expired after %v, before its deadline", waited)
	}
}

func TestCloseExpiresParked(t *testing.T) {
	p, err := New(Options{})
	if errors.Is(err, ErrUnsupported) {
		t.Skip("no epoll here")
	}
	done := make(chan struct{})
	go func() { p.Run(); close(done) }()
	ln := listen(t)
	var gots []<-chan outcome
	for range 10 {
		server, _ := pair(t, ln)
		gots = append(gots, park(t, p, server, time.Now().Add(time.Hour)))
	}
	p.Close()
	<-done
	for _, got := range gots {
		expect(t, got, "expire")
	}
	server, _ := pair(t, ln)
	if err := p.Park(server, time.Time{}, func() {}, func() {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Park after Close: %v, want ErrClosed", err)
	}
}

func TestParkWithoutDescriptor(t *testing.T) {
	p := parker(t, time.Second)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if err := p.Park(a, time.Time{}, func() {}, func() {}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Park(net.Pipe): %v, want ErrUnsupported", err)
	}
	var nilParker *Parker
	if err := nilParker.Park(a, time.Time{}, func() {}, func() {}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("nil Parker: %v", err)
	}
}

// Parking a closed connection fails and leaves it with the caller.
func TestParkClosed(t *testing.T) {
	p := parker(t, time.Second)
	server, _ := pair(t, listen(t))
	server.Close()
	called := false
	if err := p.Park(server, time.Time{}, func() { called = true }, func() { called = true }); err == nil {
		t.Fatal("parked a closed connection")
	}
	if p.Len() != 0 || called {
		t.Fatalf("a failed Park left %d parked (called %v)", p.Len(), called)
	}
}

// 1,000 parked connections hold no goroutine.
func TestManyParkedNoGoroutines(t *testing.T) {
	p := parker(t, time.Second)
	ln := listen(t)
	before := runtime.NumGoroutine()
	clients := make([]net.Conn, 0, 1000)
	woke := make(chan struct{}, 1000)
	for range 1000 {
		server, client := pair(t, ln)
		clients = append(clients, client)
		if err := p.Park(server, time.Now().Add(time.Hour), func() { woke <- struct{}{} }, func() {}); err != nil {
			t.Fatal(err)
		}
	}
	if n := runtime.NumGoroutine(); n > before+10 {
		t.Fatalf("%d goroutines with 1,000 parked, %d before", n, before)
	}
	if p.Len() != 1000 {
		t.Fatalf("%d parked, want 1000", p.Len())
	}
	for _, c := range clients[:100] {
		c.Write([]byte("x"))
	}
	for range 100 {
		select {
		case <-woke:
		case <-time.After(5 * time.Second):
			t.Fatal("a connection spoken to did not wake")
		}
	}
	if p.Len() != 900 {
		t.Fatalf("%d parked after 100 woke, want 900", p.Len())
	}
}

func parkDetached(t *testing.T, p *Parker, c net.Conn, deadline time.Time) (<-chan net.Conn, <-chan struct{}) {
	t.Helper()
	woke, expired := make(chan net.Conn, 1), make(chan struct{}, 1)
	if err := p.ParkDetached(c, deadline, func(nc net.Conn) { woke <- nc }, func() { expired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	return woke, expired
}

// A detached connection wakes as a new net.Conn on the same socket.
func TestDetachedWake(t *testing.T) {
	p := parker(t, time.Second)
	server, client := pair(t, listen(t))
	woke, _ := parkDetached(t, p, server, time.Time{})
	if _, err := server.Write([]byte("x")); err == nil {
		t.Fatal("the parked net.Conn is still open")
	}
	client.Write([]byte("hello"))
	var nc net.Conn
	select {
	case nc = <-woke:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake")
	}
	defer nc.Close()
	b := make([]byte, 5)
	if _, err := io.ReadFull(nc, b); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v on the new conn", b, err)
	}
	if _, err := nc.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, b[:4]); err != nil || string(b[:4]) != "back" {
		t.Fatalf("client read %q, %v", b[:4], err)
	}
	// Parked again, detached again.
	woke, _ = parkDetached(t, p, nc, time.Time{})
	client.Close()
	select {
	case nc := <-woke:
		if n, err := nc.Read(b); n != 0 || err != io.EOF {
			t.Fatalf("read %d, %v after the client closed, want EOF", n, err)
		}
		nc.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no wake on the client's close")
	}
}

// A detached connection that expires, or is still parked at Close, is
// closed: the client sees the end.
func TestDetachedExpireCloses(t *testing.T) {
	p := parker(t, 10*time.Millisecond)
	ln := listen(t)
	server, client := pair(t, ln)
	_, expired := parkDetached(t, p, server, time.Now().Add(30*time.Millisecond))
	select {
	case <-expired:
	case <-time.After(5 * time.Second):
		t.Fatal("no expire")
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read %d, %v, want EOF", n, err)
	}

	q, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { q.Run(); close(done) }()
	server, client = pair(t, ln)
	_, expired = parkDetached(t, q, server, time.Time{})
	q.Close()
	<-done
	<-expired
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read %d, %v after Close, want EOF", n, err)
	}
}

// Only a connection with its own descriptor is detached: a TLS one is not
// (its state cannot move), and it stays open.
func TestDetachedNeedsDescriptor(t *testing.T) {
	p := parker(t, time.Second)
	server, _ := pair(t, listen(t))
	tc := tls.Server(server, &tls.Config{})
	if err := p.ParkDetached(tc, time.Time{}, func(net.Conn) {}, func() {}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("ParkDetached(*tls.Conn): %v, want ErrUnsupported", err)
	}
	if _, err := server.Write([]byte("x")); err != nil {
		t.Fatalf("the refused connection was closed: %v", err)
	}
}
