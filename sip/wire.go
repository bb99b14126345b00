package sip

import (
	"bytes"

	"clb/policy"
	"clb/sip/framing"
)

// field identifies the header fields the proxy reads or rewrites.
type field uint8

const (
	fieldOther field = iota
	fieldVia
	fieldFrom
	fieldTo
	fieldCallID
	fieldCSeq
	fieldMaxForwards
	fieldRoute
	fieldContentLength
	fieldProxyRequire
	fieldCLB // any X-CLB-* header
	numFields
)

// line is one header field as it stands in the message: [start, end) spans
// the field with its continuation lines and final CRLF; the value is
// [valueStart, valueEnd), trimmed.
type line struct {
	field                field
	start, end           int
	nameEnd              int
	valueStart, valueEnd int
}

// wire is a message's bytes with an index of its header fields. The proxy
// forwards what it does not change byte for byte, so it edits the message
// here rather than re-serialising a parsed one (which would, for one, change
// the case of an extension method).
type wire struct {
	data      []byte
	startLine int // end of the start line, at its CRLF
	lines     []line
	bodyStart int // first byte after the empty line; len(data) if none
	// firsts[f] is 1 + the index in lines of the first field of kind f (0:
	// none), counts[f] how many there are: the proxy asks for both often.
	firsts [numFields]int32
	counts [numFields]int32
}

// scan indexes data. It never fails: a message it cannot index is indexed
// as far as it goes, which is what answering it with 400 needs. lines is
// reused to avoid allocating.
func scan(data []byte, lines []line) wire {
	w := wire{data: data, lines: lines[:0], bodyStart: len(data)}
	eol := bytes.Index(data, crlf)
	if eol < 0 {
		w.startLine = len(data)
		return w
	}
	w.startLine = eol
	pos := eol + 2
	for pos < len(data) {
		if bytes.HasPrefix(data[pos:], crlf) {
			w.bodyStart = pos + 2
			return w
		}
		end := framing.FieldEnd(data, pos)
		if end < 0 {
			return w // no CRLF: truncated
		}
		// Indexed in place: a line is six words, and copying it out of a
		// constructor showed in the profile.
		w.lines = append(w.lines, line{})
		l := &w.lines[len(w.lines)-1]
		parseLine(l, data, pos, end)
		if w.counts[l.field]++; w.firsts[l.field] == 0 {
			w.firsts[l.field] = int32(len(w.lines))
		}
		pos = end
	}
	return w
}

var crlf = []byte("\r\n")

func parseLine(l *line, data []byte, start, end int) {
	*l = line{start: start, end: end, nameEnd: start, valueStart: end - 2, valueEnd: end - 2}
	colon := bytes.IndexByte(data[start:end], ':')
	if colon < 0 {
		return
	}
	l.nameEnd = start + colon
	ne := l.nameEnd
	for ne > start && (data[ne-1] == ' ' || data[ne-1] == '\t') {
		ne--
	}
	l.field = fieldOf(data[start:ne])
	vs, ve := l.nameEnd+1, end-2
	for vs < ve && isLWS(data[vs]) {
		vs++
	}
	for ve > vs && isLWS(data[ve-1]) {
		ve--
	}
	l.valueStart, l.valueEnd = vs, ve
}

func isLWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func fieldOf(name []byte) field {
	if len(name) == 1 {
		switch name[0] | 0x20 {
		case 'v':
			return fieldVia
		case 'f':
			return fieldFrom
		case 't':
			return fieldTo
		case 'i':
			return fieldCallID
		case 'l':
			return fieldContentLength
		}
		return fieldOther
	}
	// By length first: one comparison a field, not one a known name.
	var f field
	switch len(name) {
	case 2:
		f = fieldTo
	case 3:
		f = fieldVia
	case 4:
		if f = fieldFrom; name[0]|0x20 == 'c' {
			f = fieldCSeq
		}
	case 5:
		f = fieldRoute
	case 7:
		f = fieldCallID
	case 12:
		f = fieldMaxForwards
	case 13:
		f = fieldProxyRequire
	case 14:
		f = fieldContentLength
	}
	if f != fieldOther && policy.EqualFold(name, longNames[f]) {
		return f
	}
	if policy.IsCLBField(name) {
		return fieldCLB
	}
	return fieldOther
}

// longNames are the fields' full names, lower case, by field.
var longNames = [numFields]string{fieldVia: "via", fieldFrom: "from", fieldTo: "to", fieldCallID: "call-id",
	fieldCSeq: "cseq", fieldMaxForwards: "max-forwards", fieldRoute: "route",
	fieldContentLength: "content-length", fieldProxyRequire: "proxy-require"}

// value is a field's value bytes.
func (w *wire) value(l line) []byte { return w.data[l.valueStart:l.valueEnd] }

// count is how many fields of kind f the message has.
func (w *wire) count(f field) int { return int(w.counts[f]) }

// first is the index in lines of the first field of kind f, or -1.
func (w *wire) first(f field) int { return int(w.firsts[f]) - 1 }

// firstValueEnd is the end of the first comma-separated value of a field
// (Via and Route may carry several): the index of the comma, or valueEnd.
// Commas inside quotes and angle brackets do not count.
func (w *wire) firstValueEnd(l line) int {
	if bytes.IndexByte(w.data[l.valueStart:l.valueEnd], ',') < 0 {
		return l.valueEnd // one value: the common case, found at memchr's speed
	}
	quoted, angle := false, false
	for i := l.valueStart; i < l.valueEnd; i++ {
		switch c := w.data[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ',' && !angle:
			return i
		}
	}
	return l.valueEnd
}

// restStart is where the values after the first begin (after the comma and
// any space), given firstValueEnd's result.
func (w *wire) restStart(l line, comma int) int {
	i := comma + 1
	for i < l.valueEnd && isLWS(w.data[i]) {
		i++
	}
	return i
}
