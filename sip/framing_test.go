package sip

import (
	"bytes"
	"strconv"
	"testing"

	"clb/sip/framing"
)

// wireContentLength is how the stream reader told a message's length before
// package framing did it: from the wire index the proxy parses with.
func wireContentLength(head []byte) (int, bool) {
	w := scan(head, nil)
	if w.count(fieldContentLength) != 1 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(w.value(w.lines[w.first(fieldContentLength)])), 10, 31)
	if err != nil {
		return 0, false
	}
	return int(n), true
}

// FuzzFramingContentLength: package framing finds the Content-Length of a
// message head exactly where the proxy's wire index does, so that the
// stream transports, the proxy and the health probe agree on a message's
// length.
func FuzzFramingContentLength(f *testing.F) {
	seedCorpus(f)
	f.Add([]byte("OPTIONS sip:x SIP/2.0\r\nl: 1\r\nX: a\r\n Content-Length: 2\r\n\r\n"))
	f.Add([]byte("SIP/2.0 200 OK\r\nContent-Length:\r\n\t3 \r\n\r\nabc"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if end := bytes.Index(data, []byte("\r\n\r\n")); end >= 0 {
			data = data[:end+4]
		}
		n, ok := framing.ContentLength(data)
		wantN, wantOK := wireContentLength(data)
		if n != wantN || ok != wantOK {
			t.Fatalf("framing.ContentLength(%q) = %d, %v; the wire index says %d, %v", data, n, ok, wantN, wantOK)
		}
	})
}
