package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// WS configures clb's SIP-over-WebSocket listeners (ws:// and wss:// in
// listen.sip, RFC 7118; SPEC section 6a).
type WS struct {
	// Origins, if set, are the only Origin header values a handshake may
	// carry ("https://phone.example.com"); one without Origin or with
	// another is refused with 403. Default none: any Origin.
	Origins []string `yaml:"origins"`
	// MaxConnections bounds the WebSocket connections open at once, per
	// transport (ws and wss); a connection over it is closed at once.
	// Default 10000.
	MaxConnections int `yaml:"max_connections"`
	// PingInterval is how long a connection may be silent before clb
	// sends it a WebSocket ping; 0 sends none. Default 30s.
	PingInterval time.Duration `yaml:"ping_interval"`
	// IdleTimeout closes a connection from which nothing (no message, no
	// pong) has come for this long: a browser that answers the pings stays,
	// a dead one goes. Default 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxMessage bounds a SIP message (one WebSocket message, its fragments
	// together), in bytes; a larger one closes the connection (1009).
	// Default 65535.
	MaxMessage int `yaml:"max_message"`
}

// DefaultWS is the ws section of a file that has none.
func DefaultWS() WS {
	return WS{MaxConnections: 10_000, PingInterval: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxMessage: 65535}
}

// minFlowKey is the shortest tls.flow_key: 256 bits of a random text's
// worth, so that nobody guesses it.
const minFlowKey = 32

func (d *decoder) validateWS(c *Config) {
	w := &c.WS
	for i, o := range w.Origins {
		key := fmt.Sprintf("ws.origins[%d]", i)
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			d.errorf(d.line(key), key, "%q: want an origin like https://phone.example.com (scheme, host, optional port)", o)
		}
	}
	if w.MaxConnections < 1 || w.MaxConnections > 1_000_000 {
		d.errorf(d.line("ws.max_connections"), "ws.max_connections", "%d: must be from 1 to 1000000", w.MaxConnections)
	}
	if w.IdleTimeout <= 0 {
		d.errorf(d.line("ws.idle_timeout"), "ws.idle_timeout", "must be greater than 0")
	}
	if w.PingInterval < 0 || (w.PingInterval > 0 && w.PingInterval >= w.IdleTimeout) {
		d.errorf(d.line("ws.ping_interval"), "ws.ping_interval", "%v: must be 0 (no pings) or shorter than ws.idle_timeout (%v), so that a pong can come in time", w.PingInterval, w.IdleTimeout)
	}
	if w.MaxMessage < 1024 || w.MaxMessage > 65535 {
		d.errorf(d.line("ws.max_message"), "ws.max_message", "%d: must be from 1024 to 65535", w.MaxMessage)
	}
	if k := c.TLS.FlowKey; k != "" && len(k) < minFlowKey {
		d.errorf(d.line("tls.flow_key"), "tls.flow_key", "%d characters: give at least %d (random text, the same on every clb node)", len(k), minFlowKey)
	}
	for i, a := range c.Listen.SIP {
		if a.IsWebSocket() && a.Path != "" && !strings.HasPrefix(a.Path, "/") {
			key := fmt.Sprintf("listen.sip[%d]", i)
			d.errorf(d.line(key), key, "%s: the path must start with /", a)
		}
	}
}

// OriginAllowed reports whether a WebSocket handshake's Origin may connect.
func (w WS) OriginAllowed(origin string) bool {
	if len(w.Origins) == 0 {
		return true
	}
	for _, o := range w.Origins {
		if strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}
