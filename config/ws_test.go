package config

import (
	"fmt"
	"testing"
	"time"
)

// TestWSSection: ws:// and wss:// listeners with their paths, the ws
// section and tls.flow_key are read; without a ws section the defaults
// hold.
func TestWSSection(t *testing.T) {
	f := newTLSFiles(t)
	c, err := Parse("ws.yaml", fmt.Appendf(nil, `listen:
  sip: [udp://127.0.0.1:5060, wss://127.0.0.1:7443/sip, ws://127.0.0.1/ws/]
tls: {cert: %s, key: %s, flow_key: "0123456789abcdef0123456789abcdef"}
ws:
  origins: [https://phone.example.com, "http://127.0.0.1:8000"]
  max_connections: 500
  ping_interval: 20s
  idle_timeout: 1m
  max_message: 8192
instances:
  - {name: a, sip: udp://127.0.0.1:5071}
`, f.cert, f.key))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Listen.SIP[1]; got.String() != "wss://127.0.0.1:7443/sip" || got.Path != "/sip" || !got.IsWebSocket() {
		t.Errorf("listen.sip[1] %s (path %q)", got, got.Path)
	}
	if got := c.Listen.SIP[2]; got.String() != "ws://127.0.0.1:80/ws" {
		t.Errorf("listen.sip[2] %s, want port 80 and the path without its slash", got)
	}
	want := WS{Origins: []string{"https://phone.example.com", "http://127.0.0.1:8000"}, MaxConnections: 500,
		PingInterval: 20 * time.Second, IdleTimeout: time.Minute, MaxMessage: 8192}
	if fmt.Sprint(c.WS) != fmt.Sprint(want) || c.TLS.FlowKey != "0123456789abcdef0123456789abcdef" {
		t.Errorf("ws %+v, flow_key %q", c.WS, c.TLS.FlowKey)
	}
	if !c.WS.OriginAllowed("https://phone.example.com") || c.WS.OriginAllowed("https://evil.example.com") || c.WS.OriginAllowed("") {
		t.Error("OriginAllowed does not follow ws.origins")
	}
	c, err = Parse("min.yaml", []byte("listen: {sip: [ws://127.0.0.1:8088]}\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n"))
	if err == nil {
		t.Fatal("a udp instance with no udp listener was taken")
	}
	c, err = Parse("min.yaml", []byte("listen: {sip: [udp://127.0.0.1:5060, ws://127.0.0.1:8088]}\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.WS) != fmt.Sprint(DefaultWS()) || !c.WS.OriginAllowed("https://any.example.com") {
		t.Errorf("default ws %+v", c.WS)
	}
}
