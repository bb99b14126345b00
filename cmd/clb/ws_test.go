package main

import (
	"fmt"
	"strings"
	"testing"

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
