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
