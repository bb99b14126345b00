package httpproxy

import (
	"bufio"
	"bytes"
	"regexp"
	"testing"

	"clb/config"
	"clb/policy"
)

// FuzzKey: reading a head and taking its key never panics; a rule or a
// CLBKEY cookie gives the same key every time, and no cookie and no rule
// gives a new 22-character key.
func FuzzKey(f *testing.F) {
	for _, seed := range []string{
		"GET /?user=alice HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a/b?x=%41&user=b%20c HTTP/1.1\r\nHost: x\r\nCookie: CLBKEY=abc; JSESSIONID=s1.node2\r\n\r\n",
		"POST /s/42 HTTP/1.1\r\nHost: x\r\nX-Session: id=7;foo\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nCookie: CLBKEY=user%3Aalice\r\n\r\n",
		"GET /?user=%zz HTTP/1.1\r\nHost: x\r\nCookie: =;;==\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	rules := policy.Compile([]config.Rule{
		{Header: "X-Session", Regexp: config.Pattern{Regexp: regexp.MustCompile(`id=([0-9]+)`)}, Prefix: "s:"},
		{Query: "user", Prefix: "user:"},
		{Cookie: "JSESSIONID", Regexp: config.Pattern{Regexp: regexp.MustCompile(`^([^.]+)`)}},
		{RequestURI: true, Regexp: config.Pattern{Regexp: regexp.MustCompile(`^/s/([0-9]+)$`)}},
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		var h head
		if err := readHead(bufio.NewReaderSize(bytes.NewReader(data), 4096), &h, 4096, 50, true); err != nil {
			return
		}
		k1, k2 := requestKey(rules, &h), requestKey(rules, &h)
		switch {
		case k1.minted != k2.minted || k1.ruled != k2.ruled:
			t.Fatalf("%+v then %+v", k1, k2)
		case !k1.minted && k1.key != k2.key:
			t.Fatalf("key %q then %q", k1.key, k2.key)
		case k1.minted && (len(k1.key) != 22 || k1.fromCookie != ""):
			t.Fatalf("minted %+v", k1)
		case k1.key == "":
			t.Fatal("empty key")
		}
	})
}

// FuzzHead: whatever bytes arrive, reading a request head, its framing and
// its target never panics; a head clb accepts has a start line and fields
// free of CR, LF and NUL, one framing (never both Content-Length and
// Transfer-Encoding), and a target of RFC 3986 bytes; and what clb sends an
// instance for it reads back as one request with the same method and target.
func FuzzHead(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a?b=c HTTP/1.1\r\nHost: a.example:80\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET http://x/y HTTP/1.1\r\nHost: x\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	s := &Server{scheme: "http", via: "1.1 clb-fuzz"}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h head
		if err := readHead(bufio.NewReaderSize(bytes.NewReader(data), 4096), &h, 4096, 50, true); err != nil {
			return
		}
		fr, err := h.requestFraming()
		if err != nil || h.checkTarget() != nil {
			return
		}
		for _, b := range [][]byte{h.method, h.target} {
			if bytes.ContainsAny(b, "\r\n\x00 ") {
				t.Fatalf("start line part %q", b)
			}
		}
		for _, fl := range h.fields {
			if bytes.ContainsAny(fl.name, "\r\n\x00: ") || bytes.ContainsAny(fl.value, "\r\n\x00") {
				t.Fatalf("field %q: %q", fl.name, fl.value)
			}
		}
		_, hasCL, _ := h.get("content-length")
		if _, hasTE := h.transferCodings(); hasCL && hasTE {
			t.Fatal("accepted both Content-Length and Transfer-Encoding")
		}
		if !validTargetBytes(h.target) && h.target[0] == '/' {
			t.Fatalf("accepted target %q", h.target)
		}
		// What goes to the instance parses back as the same request.
		owner := &config.Instance{Name: "i", HTTP: config.HTTPAddr{Endpoint: config.Endpoint{Transport: "http", Host: "127.0.0.1", Port: 1}}}
		x := exchange{s: s, cc: &clientConn{remote: "127.0.0.1", connState: &connState{}}, h: &h, f: fr, session: &session{}}
		x.key.key = "k"
		x.d.Owner = owner
		out := x.appendRequestHead(nil)
		var back head
		if err := readHead(bufio.NewReader(bytes.NewReader(out)), &back, 1<<20, 1000, true); err != nil {
			t.Fatalf("clb's own head does not parse: %v\n%q", err, out)
		}
		if !bytes.Equal(back.method, h.method) || !bytes.Equal(back.target, h.target) {
			t.Fatalf("sent %s %s for %s %s", back.method, back.target, h.method, h.target)
		}
		if _, err := back.requestFraming(); err != nil {
			t.Fatalf("clb's own head has bad framing: %v\n%q", err, out)
		}
	})
}
