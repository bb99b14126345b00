package sip

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	gosip "github.com/emiago/sipgo/sip"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
	"clb/policy"
)

// seedCorpus adds the torture messages to a fuzz target's seeds (the
// testdata/fuzz/<target> files are added by go test itself).
func seedCorpus(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "sip", "*", "*.dat"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
}

func fuzzRules() []config.Rule {
	return []config.Rule{
		{Header: "X-Session", Regexp: config.Pattern{Regexp: regexp.MustCompile(`^id=([^;]*)`)}, Prefix: "s:"},
		{Header: "P-Asserted-Identity", URIUser: true},
		{RequestURI: true, URIParam: "user"},
		{Header: "To", URIParam: "x"},
		{Header: "From", URIUser: true, Prefix: "u:"},
	}
}

// FuzzKey: key extraction never panics, is a function of the message, and
// without rules is From tag + Call-ID.
func FuzzKey(f *testing.F) {
	seedCorpus(f)
	rules := policy.Compile(fuzzRules())
	p := newProxy(ProxyOptions{}, &recorder{})
	f.Fuzz(func(t *testing.T, data []byte) {
		w := scan(data, nil)
		var v view
		if _, ok := p.parse(&w, &v); !ok || !v.request {
			return
		}
		var b []byte // one scratch for both, as a reader's
		if k1, k2 := strings.Clone(requestKey(rules, &v, &b)), requestKey(rules, &v, &b); k1 != k2 {
			t.Fatalf("key %q then %q", k1, k2)
		}
		if k := requestKey(nil, &v, new([]byte)); k != v.fromTag()+v.callID {
			t.Fatalf("default key %q, want From tag + Call-ID", k)
		}
	})
}

// FuzzRecordRoute: whatever the key, instance and tag, clb's Record-Route
// escapes them into a URI that parses and decodes back to them.
func FuzzRecordRoute(f *testing.F) {
	f.Add("abc123call@host", "inst1", "tag1", false)
	f.Add("user:alice", "app.2_x-y", "", true)
	f.Add("a;b=c>,\"d e\"%\r\nX: y", "i", "t`'!~", false)
	f.Add("\x00\xff%%41", "-", "%zz", true)
	self := endpoint{"udp", netip.MustParseAddrPort("127.0.0.1:5060")}
	f.Fuzz(func(t *testing.T, key, inst, ftag string, outbound bool) {
		if back, ok := policy.UnescapeKey(policy.EscapeKey(key)); !ok || back != key {
			t.Fatalf("policy.UnescapeKey(policy.EscapeKey(%q)) = %q, %v", key, back, ok)
		}
		for _, c := range []byte(policy.EscapeKey(key)) {
			if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%", rune(c)) {
				t.Fatalf("policy.EscapeKey(%q) has %q", key, c)
			}
		}
		if key == "" {
			return
		}
		in := dialogRoute{key: key, instance: inst, ftag: ftag, outbound: outbound}
		rr := appendRecordRoute(nil, namedEndpoint{endpoint: self}, in)
		value := strings.TrimSuffix(strings.TrimPrefix(string(rr), "Record-Route: "), "\r\n")
		msg := "BYE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n" +
			"Route: " + value + "\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
		m, err := gosip.ParseMessage([]byte(msg))
		if err != nil {
			t.Fatalf("clb's Route does not parse: %v\n%s", err, value)
		}
		rt := m.(*gosip.Request).Route()
		if rt == nil {
			t.Fatalf("no Route in\n%s", msg)
		}
		got, ok := parseDialogRoute(func(k string) (string, bool) { return param(rt.Address.UriParams, k) }, new([]byte))
		if !ok || got != in {
			t.Fatalf("decoded %+v (%v), want %+v", got, ok, in)
		}
	})
}

// recorder is a sender that keeps what the proxy sends.
type recorder struct {
	sent [][]byte
}

func (r *recorder) send(dst destination, data []byte) error {
	r.sent = append(r.sent, bytes.Clone(data))
	return nil
}

func (r *recorder) listener(transport string, to netip.Addr) (endpoint, bool) {
	return endpoint{transport, netip.MustParseAddrPort("127.0.0.1:5060")}, true
}

func (r *recorder) isSelf(a netip.AddrPort) bool {
	return a == netip.MustParseAddrPort("127.0.0.1:5060")
}

func (r *recorder) connWith(string, netip.AddrPort) conn         { return nil }
func (r *recorder) flow(string, string) (destination, flowState) { return destination{}, flowForged }

func (r *recorder) hasPort(port uint16) bool { return port == 5060 }

// FuzzHandle: any datagram is handled without a panic, and whatever clb
// forwards keeps the start line it came with.
func FuzzHandle(f *testing.F) {
	seedCorpus(f)
	in := []config.Instance{
		{Name: "a", Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1", Port: 5071}}},
		{Name: "b", Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{Transport: "tcp", Host: "127.0.0.1", Port: 5072}}},
	}
	bal, err := balancer.New(in, loadfactor.DefaultParams())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rec := &recorder{}
		p := newProxy(ProxyOptions{Balancer: bal, Rules: fuzzRules(), Instances: in}, rec)
		var sc scratch
		p.handle(&inbound{data: data, local: endpoint{"udp", netip.MustParseAddrPort("127.0.0.1:5060")},
			src: netip.MustParseAddrPort("192.0.2.1:5062")}, &sc)
		start, _, _ := bytes.Cut(data, crlf)
		for _, out := range rec.sent {
			if bytes.HasPrefix(out, []byte("SIP/2.0 ")) && !bytes.HasPrefix(data, []byte("SIP/")) {
				continue // clb's own answer
			}
			if !bytes.HasPrefix(out, append(start, crlf...)) {
				t.Fatalf("forwarded with another start line:\n%q\nfrom\n%q", out, data)
			}
		}
	})
}

// TestRuleCompactNames: a rule finds its field whether the message uses the
// long or the compact name, and a rule may name the compact form.
func TestRuleCompactNames(t *testing.T) {
	p := newProxy(ProxyOptions{}, &recorder{})
	msg := func(callID, from string) []byte {
		return []byte("INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n" +
			from + ": <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n" + callID + ": abc\r\n" +
			"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
	}
	for _, rules := range [][]config.Rule{
		{{Header: "Call-ID", Prefix: "c:"}},
		{{Header: "i", Prefix: "c:"}},
	} {
		for _, name := range []string{"Call-ID", "i", "I"} {
			w := scan(msg(name, "From"), nil)
			var v view
			if r, ok := p.parse(&w, &v); !ok {
				t.Fatalf("%s: refused %+v", name, r)
			}
			if k := requestKey(policy.Compile(rules), &v, new([]byte)); k != "c:abc" {
				t.Errorf("rule on %s, message with %s: key %q, want c:abc", rules[0].Header, name, k)
			}
		}
	}
	for _, name := range []string{"From", "f", "F"} {
		w := scan(msg("Call-ID", name), nil)
		var v view
		if r, ok := p.parse(&w, &v); !ok {
			t.Fatalf("%s: refused %+v", name, r)
		}
		if k := requestKey(policy.Compile([]config.Rule{{Header: "f", URIUser: true}}), &v, new([]byte)); k != "alice" {
			t.Errorf("rule on f, message with %s: key %q, want alice", name, k)
		}
	}
}
