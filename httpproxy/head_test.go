package httpproxy

import (
	"bufio"
	"strings"
	"testing"
)

// TestFieldKinds: the fields clb reads are known in any case, and no other
// name is taken for one of them.
func TestFieldKinds(t *testing.T) {
	for _, tc := range []struct {
		name string
		want fieldKind
	}{
		{"Host", hostField}, {"HOST", hostField}, {"host", hostField},
		{"Content-Length", contentLengthField}, {"Transfer-Encoding", transferEncodingField},
		{"Connection", connectionField}, {"Keep-Alive", keepAliveField}, {"Proxy-Connection", proxyConnectionField},
		{"TE", teField}, {"Trailer", trailerField}, {"Upgrade", upgradeField}, {"Expect", expectField},
		{"Cookie", cookieField}, {"Via", viaField}, {"X-Forwarded-For", xForwardedForField},
		{"x-forwarded-proto", xForwardedProtoField}, {"X-Forwarded-Host", xForwardedHostField},
		{"X-CLB-Key", clbField}, {"x-clb-anything", clbField},
		// Near misses, of the same lengths or prefixes.
		{"Hosts", otherField}, {"Hast", otherField}, {"Tx", otherField}, {"Vía", otherField},
		{"Content-Lengtt", otherField}, {"Set-Cookie", otherField}, {"Cookies", otherField},
		{"Expects", otherField}, {"Upgrad", otherField}, {"Connectio", otherField},
		{"X-Forwarded-Fox", otherField}, {"Transfer-Encodinf", otherField},
		{"X-CLB-", otherField}, {"X-CLB", otherField}, {"X-CLBKey", otherField},
	} {
		if got := kindOf([]byte(tc.name)); got != tc.want {
			t.Errorf("kindOf(%q) = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestFramingLeavesHeadIntact: deriving the framing of a head with two
// Transfer-Encoding fields changes none of its bytes (joining their values
// in the head's own buffer once overwrote the field after the first one,
// which went on to the client garbled).
func TestFramingLeavesHeadIntact(t *testing.T) {
	const msg = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nX-A: b\r\nTransfer-Encoding: chunked\r\nConnection: x-a, close\r\n\r\n"
	var h head
	h.buf = make([]byte, 0, 4096) // as on a keep-alive connection: one buffer for all the lines
	if err := readHead(bufio.NewReader(strings.NewReader(msg)), &h, 4096, 10, false); err != nil {
		t.Fatal(err)
	}
	f, err := h.responseFraming([]byte("GET"))
	if err != nil || f.chunked || f.length != -1 {
		t.Fatalf("framing %+v, %v: want to the end of the connection", f, err)
	}
	if got := string(h.fields[1].name) + ": " + string(h.fields[1].value); got != "X-A: b" {
		t.Errorf("second field after the framing: %q, want %q", got, "X-A: b")
	}
	if string(h.buf) != msg {
		t.Errorf("head's buffer changed:\n%q\nwant\n%q", h.buf, msg)
	}
	if !h.conn.close || h.conn.upgrade || !h.connectionListed([]byte("X-A")) || h.connectionListed([]byte("X-B")) {
		t.Errorf("Connection read as %+v", h.conn)
	}
}
