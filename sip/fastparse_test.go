package sip

import (
	"bytes"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"clb/balancer"
	"clb/policy"
)

// fastFields are the kinds the fast parsers read, with the name sipgo is
// given them under.
var fastFields = []struct {
	f    field
	name string
}{{fieldVia, "Via"}, {fieldFrom, "From"}, {fieldTo, "To"}, {fieldRoute, "Route"}}

// checkFast holds the fast parsers to sipgo's on one field value or
// Request-URI: what they take, sipgo takes and reads alike. It reports
// whether the fast parser took it.
func checkFast(t *testing.T, f field, name string, value []byte) bool {
	t.Helper()
	var s fieldSlots
	if f == fieldOther { // the Request-URI
		var fast, ref gosip.Uri
		if !s.uri(str(value), &fast) {
			return false
		}
		if err := gosip.ParseUri(string(value), &ref); err != nil {
			t.Fatalf("fast parser took Request-URI %q, sipgo refuses it: %v", value, err)
		}
		if !reflect.DeepEqual(normURI(fast), normURI(ref)) {
			t.Fatalf("Request-URI %q:\nfast  %#v\nsipgo %#v", value, fast, ref)
		}
		return true
	}
	hs, ok := s.fast(f, value, nil)
	if !ok {
		return false
	}
	ref, err := gosip.HeadersParser(gosip.DefaultHeadersParser()).ParseHeader(nil, []byte(name+": "+string(value)))
	if err != nil || len(ref) != len(hs) {
		t.Fatalf("fast parser took %s %q as %d values, sipgo: %d values, %v", name, value, len(hs), len(ref), err)
	}
	for i := range hs {
		if got, want := normHeader(hs[i]), normHeader(ref[i]); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s %q, value %d:\nfast  %#v\nsipgo %#v", name, value, i, got, want)
		}
	}
	return true
}

// normHeader is h with empty parameter lists as nil: the fast parsers
// and sipgo differ only there, which no reader can tell.
func normHeader(h gosip.Header) any {
	switch h := h.(type) {
	case *gosip.ViaHeader:
		c := *h
		c.Params = normParams(c.Params)
		return c
	case *gosip.FromHeader:
		c := *h
		c.Params, c.Address = normParams(c.Params), normURI(c.Address)
		return c
	case *gosip.ToHeader:
		c := *h
		c.Params, c.Address = normParams(c.Params), normURI(c.Address)
		return c
	case *gosip.RouteHeader:
		return normURI(h.Address)
	}
	return h
}

func normURI(u gosip.Uri) gosip.Uri {
	u.UriParams, u.Headers = normParams(u.UriParams), normParams(u.Headers)
	return u
}

func normParams(ps gosip.HeaderParams) gosip.HeaderParams {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

// checkFastMessage holds every Via, From, To and Route value of a message,
// and its Request-URI, to checkFast; it counts the values the fast
// parsers took.
func checkFastMessage(t *testing.T, data []byte) (took int) {
	t.Helper()
	w := scan(data, nil)
	for _, l := range w.lines {
		for _, ff := range fastFields {
			if l.field == ff.f && checkFast(t, ff.f, ff.name, w.value(l)) {
				took++
			}
		}
	}
	if _, rest, ok := bytes.Cut(w.data[:w.startLine], sp); ok {
		if uri, _, ok := bytes.Cut(rest, sp); ok && checkFast(t, fieldOther, "", uri) {
			took++
		}
	}
	return took
}

// fastSeeds are field values at the edges of what the fast parsers take.
var fastSeeds = []string{
	"SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0",
	"SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport;received=10.0.0.1",
	"SIP/2.0/TCP host.example.com;branch=a;branch=b",
	"SIP/2.0/UDP host:99999;branch=x",
	"SIP/2.0/UDP host:;branch=x",
	"SIP/2.0/UDP host:abc;branch=x",
	"SIP/2.0/UDP  host;branch=x",
	"SIP/2.0/UDP host ;branch=x",
	"SIP/2.0/UDP host;branch=x;",
	"SIP/2.0/UDP host;;branch=x",
	"SIP/2.0/UDP host;branch==x",
	"SIP/2.0/UDP host;branch=",
	"SIP/2.0/UDP [::1]:5060;branch=x",
	"SIP/2.0/UDP a, SIP/2.0/UDP b",
	"SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b",
	"SIP/2.0/UDP a;branch=1,SIP/2.0/UDP b;branch=2,\t SIP/2.0/TCP c:5;rport",
	"SIP/2.0/UDP a;branch=1 , SIP/2.0/UDP b",
	"SIP/2.0/UDP a;branch=1,",
	"SIP/2.0/UDP a;branch=1,,SIP/2.0/UDP b",
	"SIP/2.0/UDP a;,SIP/2.0/UDP b",
	"SIP/2.0/UDP a;b=1, SIP/2.0/UDP b;b=2, SIP/2.0/UDP c;b=3, SIP/2.0/UDP d;b=4, SIP/2.0/UDP e;b=5",
	"SIP / 2.0 / UDP host",
	"sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag001",
	"<sip:service@127.0.0.1:5060>",
	"sip:alice@example.com;tag=1",
	"sip:alice@example.com",
	"\"Alice\" <sip:alice@example.com>;tag=1",
	"a;b <sip:x@y>",
	"<sip:x@y>x",
	"<sip:x@y>;tag",
	"<sip:x@y>;tag=a=b",
	"<sip:*>",
	"<>",
	"<sip:a:b@c>",
	"<sip:a@b@c>",
	"<sip:a@b;x=c@d>",
	"<sip:@b>",
	"<sip://b>",
	"<SIP:a@b>",
	"<sips:a@b:5061;transport=tls>",
	"<tel:+1234>",
	"<sip:a@b?x=y>",
	"<sip:127.0.0.1:5060;transport=udp;lr;bekey=4242SIPpTag001%40127.0.0.1;beroute=inst1;ftag=4242SIPpTag001>",
	"<sip:127.0.0.1;lr>;x=y",
	"<sip:a@b;lr>, <sip:c@d;lr>",
	"sip:127.0.0.1;lr",
	"sip:service@127.0.0.1:5060",
	"sip:127.0.0.1:5071;transport=UDP",
	"sip:a@b;maddr=[::1]",
	"sip:a;b@c",
	"sip:a@b;x;x=1;X=2",
}

// TestFastParseAgreesWithSipgo: on the torture corpus, the calls the
// benchmarks send and the edge cases above, whatever the fast parsers
// take sipgo takes and reads alike; and they take the plain fields of a
// SIPp call, or they would buy nothing.
func TestFastParseAgreesWithSipgo(t *testing.T) {
	for _, m := range corpusMessages(t) {
		checkFastMessage(t, m)
	}
	clb := netip.MustParseAddrPort("127.0.0.1:5060")
	uac := netip.MustParseAddrPort("127.0.0.1:5061")
	uas := netip.MustParseAddrPort("127.0.0.1:5071")
	for i, m := range callMessages(1, clb, uac, uas, "k") {
		// INVITE: Via, From, To, Request-URI; 180 and 200: two Vias,
		// Record-Route (not read), From, To; ACK and BYE: Route too; 200:
		// two Vias, From, To.
		want := []int{4, 4, 4, 5, 5, 4}[i]
		if took := checkFastMessage(t, m); took != want {
			t.Errorf("message %d: fast parsers took %d fields, want %d:\n%s", i, took, want, m)
		}
	}
	// SIPp's UAS echoes the Vias of a request in one field.
	if v := "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKclb1abc, SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0"; !checkFast(t, fieldVia, "Via", []byte(v)) {
		t.Errorf("fast parser left Via %q to sipgo", v)
	}
	for _, v := range fastSeeds {
		for _, ff := range fastFields {
			checkFast(t, ff.f, ff.name, []byte(v))
		}
		checkFast(t, fieldOther, "", []byte(v))
	}
}

// FuzzFastParse: on any message, and on any single field value, what the
// fast parsers take sipgo takes and reads alike.
func FuzzFastParse(f *testing.F) {
	seedCorpus(f)
	for _, v := range fastSeeds {
		f.Add([]byte(v))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFastMessage(t, data)
		if bytes.IndexByte(data, '\n') < 0 {
			for _, ff := range fastFields {
				checkFast(t, ff.f, ff.name, bytes.TrimSpace(data))
			}
			checkFast(t, fieldOther, "", data)
		}
	})
}

// corpusMessages are the torture messages of testdata/sip.
func corpusMessages(t *testing.T) [][]byte {
	t.Helper()
	var out [][]byte
	for _, dir := range []string{"rfc4475", "rfc5118"} {
		for _, e := range manifest(t, filepath.Join("..", "testdata", "sip", dir)) {
			out = append(out, e.data)
		}
	}
	return out
}

// TestCallAllocations: a call's six messages through the proxy allocate
// nothing (sipgo's parsers took 78 allocations a call; the key of the
// dialog the INVITE begins is made in the reader's scratch).
func TestCallAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	call := callProxy(t, nil, 16)
	var sc scratch
	i := 0
	if allocs := testing.AllocsPerRun(100, func() { call(i, &sc); i++ }); allocs > 0 {
		t.Errorf("%v allocations a call, want 0", allocs)
	}
}

// TestKeyInScratch: INVITEs through one scratch and one message buffer
// (as a UDP reader's slot), their keys of different lengths, each carry
// their own key (From tag + Call-ID) in X-CLB-Key, Record-Route and the
// access log line written after the send, and go to its owner, not to the
// key of the one before.
func TestKeyInScratch(t *testing.T) {
	clb := netip.MustParseAddrPort("127.0.0.1:5060")
	uac := netip.MustParseAddrPort("127.0.0.1:5061")
	in, bal := udpInstances(t)
	access, lines := accessLines(t)
	rec := &recorder{}
	p := newProxy(ProxyOptions{Balancer: bal, Instances: in, Access: access}, rec)
	var sc scratch
	slot := make([]byte, 0, 4096)
	owners := map[string]bool{}
	for _, i := range []int{1000, 7, 123456, 42, 3, 99999} {
		slot = append(slot[:0], callMessages(i, clb, uac, netip.MustParseAddrPort("127.0.0.1:5071"), "")[0]...)
		rec.sent = nil
		p.handle(&inbound{data: slot, local: endpoint{"udp", clb}, src: uac}, &sc)
		if len(rec.sent) != 1 {
			t.Fatalf("INVITE %d: %d messages sent, want 1", i, len(rec.sent))
		}
		m, err := gosip.ParseMessage(rec.sent[0])
		if err != nil {
			t.Fatalf("INVITE %d forwarded unparsable: %v", i, err)
		}
		key := fmt.Sprintf("4242SIPpTag00%d%d-4242@127.0.0.1", i, i)
		if got := header(m, "X-CLB-Key"); got != policy.EscapeKey(key) {
			t.Errorf("INVITE %d: X-CLB-Key %q, want %q", i, got, policy.EscapeKey(key))
		}
		if rr := header(m, "Record-Route"); !strings.Contains(rr, "bekey="+policy.EscapeKey(key)+";") {
			t.Errorf("INVITE %d: Record-Route %s, want bekey=%s", i, rr, policy.EscapeKey(key))
		}
		owner := bal.Table().RouteFor(balancer.SIP, key, "", time.Now()).Owner.Name
		if got := header(m, "X-CLB-Instance"); got != owner {
			t.Errorf("INVITE %d went to %s; the owner of %q is %s", i, got, key, owner)
		}
		expectLine(t, lines, map[string]any{"method": "INVITE", "key": key, "instance": owner, "outcome": "forwarded"})
		owners[owner] = true
	}
	if len(owners) < 2 {
		t.Errorf("all six keys owned by %v: the test shows nothing about routing by each key", owners)
	}
}
