package config

import (
	"errors"
	"fmt"
	"strings"
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

func TestWSErrors(t *testing.T) {
	f := newTLSFiles(t)
	base := "listen:\n  sip: [udp://127.0.0.1:5060, ws://127.0.0.1:8088/sip]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n"
	for _, tc := range []struct {
		name string
		yaml string
		line int
		key  string
		msg  string
	}{
		{name: "wss without tls", yaml: "listen:\n  sip: [udp://127.0.0.1:5060, wss://127.0.0.1:7443/sip]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n",
			line: 1, key: "tls.cert", msg: "wss:// listener"},
		{name: "instance on ws", yaml: "listen:\n  sip: [ws://127.0.0.1:8088/sip]\ninstances:\n  - {name: a, sip: ws://127.0.0.1:5071}\n",
			line: 4, key: "instances[0].sip", msg: "udp, tcp or tls"},
		{name: "query in the path", yaml: "listen:\n  sip: [\"ws://127.0.0.1:8088/sip?x=1\"]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n",
			line: 2, key: "listen.sip[0]", msg: "no query"},
		{name: "path on udp", yaml: "listen:\n  sip: [udp://127.0.0.1:5060/sip]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n",
			line: 2, key: "listen.sip[0]", msg: "no path"},
		{name: "ws clashes with tcp", yaml: "listen:\n  sip: [udp://127.0.0.1:5060, tcp://127.0.0.1:5060, ws://127.0.0.1:5060]\ninstances: [{name: a, sip: udp://127.0.0.1:5071}]\n",
			line: 2, key: "listen.sip[2]", msg: "also listen.sip[1]"},
		{name: "origin with a path", yaml: base + "ws: {origins: [https://phone.example.com/app]}\n", line: 4, key: "ws.origins[0]", msg: "want an origin"},
		{name: "origin without scheme", yaml: base + "ws: {origins: [phone.example.com]}\n", line: 4, key: "ws.origins[0]", msg: "want an origin"},
		{name: "ping not shorter than idle", yaml: base + "ws: {ping_interval: 2m, idle_timeout: 1m}\n", line: 4, key: "ws.ping_interval", msg: "shorter than ws.idle_timeout"},
		{name: "no idle timeout", yaml: base + "ws: {idle_timeout: 0s, ping_interval: 0s}\n", line: 4, key: "ws.idle_timeout", msg: "greater than 0"},
		{name: "max_connections 0", yaml: base + "ws: {max_connections: 0}\n", line: 4, key: "ws.max_connections", msg: "from 1 to"},
		{name: "max_message too large", yaml: base + "ws: {max_message: 100000}\n", line: 4, key: "ws.max_message", msg: "from 1024 to 65535"},
		{name: "unknown key", yaml: base + "ws: {origin: [https://a.example.com]}\n", line: 4, key: "ws.origin", msg: ""},
		{name: "short flow key", yaml: fmt.Sprintf("%stls: {cert: %s, key: %s, flow_key: short}\n", base, f.cert, f.key), line: 4, key: "tls.flow_key", msg: "at least 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("clb.yaml", []byte(tc.yaml))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse: %v, want an *Error", err)
			}
			found := false
			for _, x := range err.(interface{ Unwrap() []error }).Unwrap() {
				e := x.(*Error)
				found = found || e.Line == tc.line && e.Key == tc.key && strings.Contains(e.Msg, tc.msg)
			}
			if !found {
				t.Errorf("got %v; want clb.yaml:%d: %s: …%s…", err, tc.line, tc.key, tc.msg)
			}
		})
	}
}
