package framing

import (
	"strings"
	"testing"
)

func TestNext(t *testing.T) {
	const head = "SIP/2.0 200 OK\r\nCall-ID: a\r\n"
	for _, tc := range []struct {
		name     string
		frame    string // what Next should span (or all of the stream, for NeedMore and TooLarge)
		after    string // the stream beyond it
		wantKind Kind
	}{
		{name: "empty", frame: "", wantKind: NeedMore},
		{name: "ping", frame: "\r\n\r\n", after: "OPTIONS", wantKind: Ping},
		{name: "CRLF before a start line", frame: "\r\n", after: "SIP/2.0", wantKind: Blank},
		{name: "lone CRLF", frame: "\r\n", wantKind: Blank},
		{name: "short", frame: "SIP", wantKind: NeedMore},
		{name: "head not ended", frame: head, wantKind: NeedMore},
		{name: "no body", frame: head + "Content-Length: 0\r\n\r\n", after: "SIP/2.0", wantKind: Message},
		{name: "body", frame: head + "l: 5\r\n\r\nhello", after: "SIP", wantKind: Message},
		{name: "body not all there", frame: head + "Content-Length: 5\r\n\r\nhell", wantKind: NeedMore},
		{name: "spaces and case", frame: head + "CONTENT-length :\t2 \r\n\r\nhi", wantKind: Message},
		{name: "folded value", frame: head + "Content-Length:\r\n 2\r\n\r\nhi", wantKind: Message},
		{name: "missing", frame: head + "\r\n", after: "hello", wantKind: BadLength},
		{name: "repeated", frame: head + "l: 0\r\nContent-Length: 0\r\n\r\n", wantKind: BadLength},
		{name: "negative", frame: head + "Content-Length: -1\r\n\r\n", wantKind: BadLength},
		{name: "not a number", frame: head + "Content-Length: 1x\r\n\r\n", wantKind: BadLength},
		{name: "over the limit", frame: head + "Content-Length: 65536\r\n\r\n", wantKind: TooLarge},
		{name: "head that does not end", frame: head + strings.Repeat("X-J: j\r\n", MaxMessage/8+1), wantKind: TooLarge},
		{name: "folded line is not Content-Length", frame: head + "X: a\r\n Content-Length: 3\r\nl: 0\r\n\r\n", after: "abc", wantKind: Message},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantN := len(tc.frame)
			if tc.wantKind == NeedMore || tc.wantKind == TooLarge {
				wantN = 0
			}
			kind, n := Next([]byte(tc.frame + tc.after))
			if kind != tc.wantKind || n != wantN {
				t.Errorf("Next(%q) = %d, %d; want %d, %d", tc.frame+tc.after, kind, n, tc.wantKind, wantN)
			}
		})
	}
}

func TestNextAllocatesNothing(t *testing.T) {
	msg := []byte("SIP/2.0 200 OK\r\nCall-ID: a\r\nContent-Length: 2\r\n\r\nhi")
	if n := testing.AllocsPerRun(100, func() { Next(msg) }); n != 0 {
		t.Errorf("Next allocates %v times", n)
	}
}
