package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Endpoint is a parsed address: transport, host and port.
type Endpoint struct {
	// Transport is the URL scheme: udp, tcp or tls for SIP, http or https
	// for HTTP, tcp for plain listeners.
	Transport string
	// Host is an IP address or a DNS name, without brackets; empty for all
	// interfaces on a listener.
	Host string
	Port int
	// Path is a ws:// or wss:// SIP listener's HTTP path ("/sip"): a
	// WebSocket handshake to any other path is refused. "" takes any.
	Path string
}

// IsZero reports whether the address was not given.
func (e Endpoint) IsZero() bool { return e == Endpoint{} }

// Addr is host:port, bracketed for IPv6, as net.Dial and net.Listen take it.
func (e Endpoint) Addr() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// String is the address as the configuration writes it.
func (e Endpoint) String() string {
	if e.IsZero() {
		return ""
	}
	return e.Transport + "://" + e.Addr() + e.Path
}

// IsLoopback reports whether Host is a loopback address or "localhost".
func (e Endpoint) IsLoopback() bool {
	if strings.EqualFold(e.Host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(e.Host)
	return err == nil && ip.Unmap().IsLoopback()
}

// SIPAddr is a SIP address, "udp://host:port", "tcp://host:port" or
// "tls://host:port", and for a listener also SIP over WebSocket (RFC
// 7118), "ws://host:port/path" or "wss://host:port/path"; without a scheme
// the transport is udp, without a port it is 5060 (5061 for tls, 80 for ws,
// 443 for wss). Port 0 (a free port) is for listeners only.
type SIPAddr struct{ Endpoint }

// UnmarshalYAML parses the address.
func (a *SIPAddr) UnmarshalYAML(n *yaml.Node) (err error) {
	a.Endpoint, err = parseEndpoint(n, "udp", "udp", "tcp", "tls", "ws", "wss")
	return err
}

// IsWebSocket reports whether the address is a ws:// or wss:// one.
func (e Endpoint) IsWebSocket() bool { return e.Transport == "ws" || e.Transport == "wss" }

// HTTPAddr is an instance's HTTP address, "http://host:port" or
// "https://host:port"; without a port it is 80 (443 for https).
type HTTPAddr struct{ Endpoint }

// UnmarshalYAML parses the address.
func (a *HTTPAddr) UnmarshalYAML(n *yaml.Node) (err error) {
	a.Endpoint, err = parseEndpoint(n, "http", "http", "https")
	return err
}

// ListenAddr is a TCP listener's host:port; port 0 picks a free port and an
// empty host listens on every interface.
type ListenAddr struct{ Endpoint }

// UnmarshalYAML parses the address.
func (a *ListenAddr) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want host:port")
	}
	host, port, err := splitHostPort(n.Value)
	if err != nil {
		return err
	}
	a.Endpoint = Endpoint{Transport: "tcp", Host: host, Port: port}
	return nil
}

// defaultPorts are the ports of addresses written without one.
var defaultPorts = map[string]int{"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443, "http": 80, "https": 443}

func parseEndpoint(n *yaml.Node, defScheme string, schemes ...string) (Endpoint, error) {
	if n.Kind != yaml.ScalarNode {
		return Endpoint{}, fmt.Errorf("want an address like %s://host:port", defScheme)
	}
	s := strings.TrimSpace(n.Value)
	scheme, rest, found := strings.Cut(s, "://")
	if !found {
		scheme, rest = defScheme, s
	}
	scheme = strings.ToLower(scheme)
	ok := false
	for _, allowed := range schemes {
		ok = ok || scheme == allowed
	}
	if !ok {
		return Endpoint{}, fmt.Errorf("%q: transport %q is not supported (use %s)", s, scheme, strings.Join(schemes, " or "))
	}
	path := ""
	if scheme == "ws" || scheme == "wss" {
		// A WebSocket listener has an HTTP path (RFC 7118 examples: /sip).
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			rest, path = rest[:i], rest[i:]
		}
		if strings.ContainsAny(path, "?#% \t") || strings.Contains(path, "//") {
			return Endpoint{}, fmt.Errorf("%q: want %s://host:port/path with a plain path, no query", s, scheme)
		}
		path = strings.TrimSuffix(path, "/")
	}
	rest = strings.TrimSuffix(rest, "/")
	if strings.ContainsAny(rest, "/?#@") {
		return Endpoint{}, fmt.Errorf("%q: want %s://host:port with no path, query or user", s, scheme)
	}
	host, port := rest, defaultPorts[scheme]
	if h, p, err := net.SplitHostPort(rest); err == nil {
		host, port, err = h, 0, nil
		if port, err = parsePort(p); err != nil {
			return Endpoint{}, fmt.Errorf("%q: %w", s, err)
		}
	} else if strings.HasPrefix(rest, "[") && strings.HasSuffix(rest, "]") {
		host = rest[1 : len(rest)-1]
	}
	if err := checkHost(host); err != nil {
		return Endpoint{}, fmt.Errorf("%q: %w", s, err)
	}
	return Endpoint{Transport: scheme, Host: host, Port: port, Path: path}, nil
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(strings.TrimSpace(s))
	if err != nil {
		return "", 0, fmt.Errorf("%q: want host:port", s)
	}
	port, err := parsePort(p)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", s, err)
	}
	if host != "" {
		if err := checkHost(host); err != nil {
			return "", 0, fmt.Errorf("%q: %w", s, err)
		}
	}
	return host, port, nil
}

func parsePort(p string) (int, error) {
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 0 to 65535", p)
	}
	return port, nil
}

// checkHost accepts an IP address or a DNS name.
func checkHost(h string) error {
	if h == "" {
		return errors.New("no host")
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if len(h) > 253 {
		return errors.New("host name longer than 253 characters")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is neither an IP address nor a host name", h)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%q is neither an IP address nor a host name", h)
			}
		}
	}
	return nil
}
