// Package framing finds SIP message boundaries on a byte stream (RFC 3261
// section 18.3: a message ends Content-Length bytes after its empty line),
// and the RFC 5626 keep-alives between messages. clb's SIP stream
// transports (TCP, and TLS to come) and the health probe over TCP frame
// with it, so that they agree on what a message is. WebSocket is not framed
// here: there a WebSocket message is one SIP message (RFC 7118).
//
// It is pure: no I/O, no allocation, no state; Next is safe for concurrent
// use.
package framing

import (
	"bytes"
	"strconv"
)

// MaxMessage bounds a SIP message on a stream (and a UDP datagram's
// payload): a peer that would need more is not framed.
const MaxMessage = 65535

// Kind is what Next found at the front of a stream.
type Kind uint8

const (
	// NeedMore: no whole message or keep-alive yet; read more.
	NeedMore Kind = iota
	// Ping is an RFC 5626 3.5.1 CRLFCRLF ping: answer with Pong.
	Ping
	// Blank is a CRLF before a start line, which is ignored (RFC 3261 7.5).
	Blank
	// Message is one whole message, head and body.
	Message
	// BadLength is a message head (what Next's length spans) whose
	// Content-Length is missing, repeated or malformed: the rest of the
	// stream cannot be framed.
	BadLength
	// TooLarge is a message over MaxMessage, or a head that does not end
	// within it: the stream cannot be framed.
	TooLarge
)

// Pong answers a Ping.
const Pong = "\r\n"

var (
	crlf     = []byte("\r\n")
	crlfcrlf = []byte("\r\n\r\n")
)

// Next frames the front of b: what is there and how many bytes of b it
// spans (0 for NeedMore and TooLarge).
func Next(b []byte) (Kind, int) {
	switch {
	case bytes.HasPrefix(b, crlfcrlf):
		return Ping, 4
	case bytes.HasPrefix(b, crlf) && (len(b) < 4 || b[2] != '\r'):
		return Blank, 2
	case len(b) < 4:
		return NeedMore, 0
	}
	end := bytes.Index(b, crlfcrlf)
	if end < 0 {
		if len(b) > MaxMessage {
			return TooLarge, 0
		}
		return NeedMore, 0
	}
	head := end + 4
	length, ok := ContentLength(b[:head])
	if !ok {
		return BadLength, head
	}
	total := head + length
	switch {
	case total > MaxMessage:
		return TooLarge, 0
	case len(b) < total:
		return NeedMore, 0
	}
	return Message, total
}

// ContentLength is the one well-formed Content-Length (or compact l) of a
// message head: head is the start line and the header fields, up to and
// with the empty line. Folded fields count as one; ok is false when there
// is no Content-Length, more than one, or its value is not a decimal number
// below 2^31.
func ContentLength(head []byte) (n int, ok bool) {
	eol := bytes.Index(head, crlf)
	if eol < 0 {
		return 0, false
	}
	var value []byte
	count := 0
	for pos := eol + 2; pos < len(head) && !bytes.HasPrefix(head[pos:], crlf); {
		end := FieldEnd(head, pos)
		if end < 0 {
			break // truncated
		}
		if v, is := contentLengthValue(head[pos:end]); is {
			value = v
			count++
		}
		pos = end
	}
	if count != 1 {
		return 0, false
	}
	u, err := strconv.ParseUint(string(value), 10, 31)
	if err != nil {
		return 0, false
	}
	return int(u), true
}

// FieldEnd is the end of the header field at pos, past its folded
// continuation lines and after its final CRLF; -1 if it has no CRLF. The
// proxy's field index uses it too, so that both read a field alike.
func FieldEnd(b []byte, pos int) int {
	from := pos // a CRLF's CR is at from or after
	for from+1 < len(b) {
		// memchr for the LF, then a look back for its CR: half the cost
		// of searching for the pair, and this runs on every line.
		i := bytes.IndexByte(b[from+1:], '\n')
		if i < 0 {
			return -1
		}
		lf := from + 1 + i
		from = lf
		if b[lf-1] != '\r' {
			continue
		}
		if lf+1 >= len(b) || (b[lf+1] != ' ' && b[lf+1] != '\t') {
			return lf + 1
		}
	}
	return -1
}

// contentLengthValue is the trimmed value of f, one header field with its
// CRLF, if f is a Content-Length.
func contentLengthValue(f []byte) ([]byte, bool) {
	colon := bytes.IndexByte(f, ':')
	if colon < 0 {
		return nil, false
	}
	name := bytes.TrimRight(f[:colon], " \t")
	if !(len(name) == 1 && name[0]|0x20 == 'l' || equalFold(name, "content-length")) {
		return nil, false
	}
	return bytes.Trim(f[colon+1:len(f)-2], " \t\r\n"), true
}

// equalFold compares ASCII case-insensitively; s is lower case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
