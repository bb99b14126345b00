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

// FuzzFieldEnd holds FieldEnd to the plain reading of a field's end: the
// first CRLF at or after pos not followed by a space or tab.
func FuzzFieldEnd(f *testing.F) {
	for _, s := range []string{"", "\r", "\n", "\r\n", "a\r\n", "a\n\r\n", "a\r\n b\r\nc", "a\r\n\tb\r\n", "\r\r\n", "a\r\n ", "a\nb\r\r\n"} {
		f.Add([]byte(s), 0)
		f.Add([]byte(s), 1)
	}
	f.Fuzz(func(t *testing.T, b []byte, pos int) {
		if pos < 0 || pos > len(b) {
			return
		}
		want := -1
		for p := pos; ; {
			i := strings.Index(string(b[p:]), "\r\n")
			if i < 0 {
				break
			}
			p += i + 2
			if p >= len(b) || b[p] != ' ' && b[p] != '\t' {
				want = p
				break
			}
		}
		if got := FieldEnd(b, pos); got != want {
			t.Fatalf("FieldEnd(%q, %d) = %d, want %d", b, pos, got, want)
		}
	})
}
