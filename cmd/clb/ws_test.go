package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"clb/certs/certstest"
)

// TestCheckWS: clb check lists the ws:// and wss:// listeners with their
// paths and says how they take clients; it refuses a wss:// listener
// without certificate and a short tls.flow_key, naming line and key.
func TestCheckWS(t *testing.T) {
	dir := t.TempDir()
	cert, key := certstest.NewCA(t, "test CA").Issue(t, certstest.Leaf{Name: "clb"}).Write(t, dir, "clb")
	path := writeFile(t, fmt.Sprintf(`listen:
  sip: [udp://127.0.0.1:5060, wss://127.0.0.1:7443/sip, ws://127.0.0.1:8088/sip]
instances:
  - {name: a, sip: udp://127.0.0.1:5071}
tls: {cert: %s, key: %s}
ws: {origins: [https://phone.example.com], max_connections: 2000}
`, cert, key))
	code, out, errOut := clb(t, "", "check", "-config", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"udp://127.0.0.1:5060, wss://127.0.0.1:7443/sip, ws://127.0.0.1:8088/sip",
		"ws: subprotocol sip; origins https://phone.example.com; at most 2000 connections per transport; ping after 30s of silence, closed after 2m0s idle",
		"flow key random at start"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{name: "wss without certificate", yaml: "listen:\n  sip: [udp://127.0.0.1:5060, wss://127.0.0.1:7443/sip]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n",
			want: ":1: tls.cert: required: a tls:// or wss:// listener"},
		{name: "short flow key", yaml: fmt.Sprintf("listen:\n  sip: [udp://127.0.0.1:5060, wss://127.0.0.1:7443/sip]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\ntls: {cert: %s, key: %s, flow_key: secret}\n", cert, key),
			want: ":4: tls.flow_key: 6 characters: give at least 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.yaml)
			code, out, errOut := clb(t, "", "check", "-config", path)
			if code != 1 || out != "" || !strings.HasPrefix(errOut, path+tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %s%s", code, out, errOut, path, tc.want)
			}
		})
	}
}

// wsHandshake sends a WebSocket handshake for subprotocol sip from origin
// to addr and returns clb's status.
func wsHandshake(t *testing.T, addr, origin string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /sip HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: sip\r\nOrigin: %s\r\n\r\n", addr, origin)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestReloadWS: a reload applies a new ws section (the next handshakes
// check the new origins) and refuses a changed tls.flow_key, which would
// turn the open dialogs' flow tokens into forgeries.
func TestReloadWS(t *testing.T) {
	dir := t.TempDir()
	cert, key := certstest.NewCA(t, "test CA").Issue(t, certstest.Leaf{Name: "clb"}).Write(t, dir, "clb")
	text := func(origin, flowKey string) string {
		return fmt.Sprintf(`listen:
  sip: [udp://127.0.0.1:0, ws://127.0.0.1:0/sip]
  admin: 127.0.0.1:0
health: {active: false}
tls: {cert: %s, key: %s, flow_key: %q}
ws: {origins: [%s]}
instances:
  - {name: a, sip: udp://127.0.0.1:5071}
`, cert, key, flowKey, origin)
	}
	const flowKey = "the first flow key, of thirty-two characters"
	path := writeFile(t, text("https://a.example.com", flowKey))
	p := startCLB(t, path)
	adminAddr := p.started["admin"].(string)
	var ws string
	for _, l := range p.started["sip"].([]any) {
		if s := l.(string); strings.HasPrefix(s, "ws://") {
			ws = strings.TrimPrefix(s, "ws://")
		}
	}
	if code := wsHandshake(t, ws, "https://b.example.com"); code != 403 {
		t.Fatalf("origin b: %d, want 403", code)
	}
	certstest.WriteFile(t, path, []byte(text("https://b.example.com", flowKey)))
	if code, body := adminCall(t, adminAddr, "POST", "/api/v1/reload", nil); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if code := wsHandshake(t, ws, "https://b.example.com"); code != 101 {
		t.Errorf("origin b after the reload: %d, want 101", code)
	}
	certstest.WriteFile(t, path, []byte(text("https://a.example.com", "another flow key, of thirty-two characters")))
	if code, body := adminCall(t, adminAddr, "POST", "/api/v1/reload", nil); code == 200 || !strings.Contains(body, "tls.flow_key: changed") {
		t.Errorf("reload with another flow key: %d %s, want it refused", code, body)
	}
	if code := wsHandshake(t, ws, "https://b.example.com"); code != 101 {
		t.Errorf("origin b after the refused reload: %d, want 101 (the running configuration stays)", code)
	}
	p.signal(syscall.SIGTERM)
	p.log("clb stopped")
	if err := p.exit(); err != nil {
		t.Fatalf("exit: %v", err)
	}
}
