package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"clb/policy"
)

// field is one header field of a head: spans of the head's buffer.
type field struct {
	name, value []byte
}

// head is an HTTP/1.x message head as received: the start line's parts and
// the fields, all slices of buf. It is parsed strictly, so that clb and the
// instance behind it cannot disagree about where a message ends (request
// smuggling): anything ambiguous is an error.
type head struct {
	buf    []byte
	fields []field

	// Request line.
	method, target []byte
	// Status line.
	status int
	reason []byte

	minor int // HTTP/1.minor
}

// errHead is a malformed head; status is what to answer.
type errHead struct {
	status int
	msg    string
}

func (e *errHead) Error() string { return e.msg }

func bad(msg string) error { return &errHead{400, msg} }

// errNothing is a connection that failed before the peer sent a byte.
type errNothing struct{ err error }

func (e *errNothing) Error() string { return e.err.Error() }
func (e *errNothing) Unwrap() error { return e.err }

var errTooLarge = &errHead{431, "request header fields too large"}

// readHead reads a head from br into h (reusing h's memory): lines up to the
// empty one, at most maxBytes in all and maxFields fields. Empty lines before
// a request line are skipped (RFC 9112 2.2). io.EOF means the peer closed
// before a head began, *errNothing that the connection failed (a reset)
// before it sent a byte.
func readHead(br *bufio.Reader, h *head, maxBytes, maxFields int, request bool) error {
	h.buf, h.fields = h.buf[:0], h.fields[:0]
	first := true
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull:
			return errTooLarge
		case err == io.EOF && first && len(h.buf) == 0 && len(line) == 0:
			return io.EOF
		case err != nil && first && len(h.buf) == 0 && len(line) == 0 && !isTimeout(err):
			return &errNothing{err}
		case err != nil:
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if len(line) < 2 || line[len(line)-2] != '\r' {
			return bad("line not ended by CRLF")
		}
		if first && len(line) == 2 && request && len(h.buf) < 8 {
			h.buf = append(h.buf, line...) // count toward the limit, skip
			continue
		}
		if len(h.buf)+len(line) > maxBytes {
			return errTooLarge
		}
		start := len(h.buf)
		h.buf = append(h.buf, line...)
		if first {
			first = false
			if err := h.parseStart(h.buf[start:len(h.buf)-2], request); err != nil {
				return err
			}
			continue
		}
		if len(line) == 2 {
			return nil // the empty line
		}
		if len(h.fields) == maxFields {
			return errTooLarge
		}
		f, err := parseField(h.buf[start : len(h.buf)-2])
		if err != nil {
			return err
		}
		h.fields = append(h.fields, f)
	}
}

func (h *head) parseStart(line []byte, request bool) error {
	if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, 0) >= 0 {
		return bad("bare CR or NUL in the start line")
	}
	if request {
		method, rest, ok1 := bytes.Cut(line, []byte(" "))
		target, proto, ok2 := bytes.Cut(rest, []byte(" "))
		if !ok1 || !ok2 || !isToken(method) || len(target) == 0 || bytes.ContainsAny(target, " \t") {
			return bad("malformed request line")
		}
		minor, ok := parseProto(proto)
		if !ok {
			return &errHead{505, "HTTP version not supported"}
		}
		h.method, h.target, h.minor = method, target, minor
		return nil
	}
	proto, rest, ok1 := bytes.Cut(line, []byte(" "))
	code, reason, _ := bytes.Cut(rest, []byte(" "))
	minor, ok2 := parseProto(proto)
	if !ok1 || !ok2 || len(code) != 3 || code[0] < '1' || code[0] > '5' ||
		code[1] < '0' || code[1] > '9' || code[2] < '0' || code[2] > '9' {
		return bad("malformed status line")
	}
	h.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	h.reason, h.minor = reason, minor
	return nil
}

// parseProto accepts HTTP/1.0 and HTTP/1.1.
func parseProto(p []byte) (int, bool) {
	if len(p) == 8 && string(p[:7]) == "HTTP/1." && (p[7] == '0' || p[7] == '1') {
		return int(p[7] - '0'), true
	}
	return 0, false
}

// parseField splits "name: value" strictly: the name a token ending at the
// colon (no white space before it), no line folding (obs-fold), and no
// control character in the value but HTAB (no bare CR, no NUL).
func parseField(line []byte) (field, error) {
	if line[0] == ' ' || line[0] == '\t' {
		return field{}, bad("obsolete line folding")
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return field{}, bad("header field without a name")
	}
	name := line[:colon]
	if !isToken(name) {
		return field{}, bad("malformed header field name (white space before the colon?)")
	}
	value := line[colon+1:]
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return field{}, bad("control character in a header field value")
		}
	}
	return field{name: name, value: bytes.Trim(value, " \t")}, nil
}

// isToken reports an RFC 9110 token.
func isToken(b []byte) bool {
	for _, c := range b {
		if !tokenChar[c] {
			return false
		}
	}
	return len(b) > 0
}

var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// get is the value of the one field named name, with found false when
// there is none and dup true when there are several.
func (h *head) get(name string) (value []byte, found, dup bool) {
	for _, f := range h.fields {
		if policy.EqualFold(f.name, name) {
			if found {
				return value, true, true
			}
			value, found = f.value, true
		}
	}
	return value, found, false
}

// has reports whether some field named name lists token among its
// comma-separated values (case-insensitive), as Connection does.
func (h *head) has(name, token string) bool {
	for _, f := range h.fields {
		if !policy.EqualFold(f.name, name) {
			continue
		}
		for v := f.value; len(v) > 0; {
			var item []byte
			item, v, _ = bytes.Cut(v, []byte(","))
			if policy.EqualFold(bytes.Trim(item, " \t"), token) {
				return true
			}
		}
	}
	return false
}

// framing is how a message's body is delimited.
type framing struct {
	chunked bool
	length  int64 // with !chunked: the Content-Length, or -1 for none
}

// requestFraming applies RFC 9112 6 strictly to a request: one Content-Length
// of digits only, or Transfer-Encoding ending in chunked (and then no
// Content-Length, and not in HTTP/1.0); else the request is refused.
func (h *head) requestFraming() (framing, error) {
	te, hasTE := h.transferCodings()
	cl, hasCL, dupCL := h.get("content-length")
	switch {
	case dupCL:
		return framing{}, bad("more than one Content-Length")
	case hasTE && hasCL:
		return framing{}, bad("both Content-Length and Transfer-Encoding")
	case hasTE && h.minor == 0:
		return framing{}, bad("Transfer-Encoding in HTTP/1.0")
	case hasTE:
		if !policy.EqualFold(te, "chunked") {
			if last := lastCoding(te); !policy.EqualFold(last, "chunked") {
				return framing{}, bad("Transfer-Encoding whose last coding is not chunked")
			}
			return framing{}, &errHead{501, "transfer coding not implemented"}
		}
		return framing{chunked: true}, nil
	case hasCL:
		n, ok := parseLength(cl)
		if !ok {
			return framing{}, bad("invalid Content-Length")
		}
		return framing{length: n}, nil
	}
	return framing{length: 0}, nil
}

// responseFraming is RFC 9112 6.3 for a response to method.
func (h *head) responseFraming(method []byte) (framing, error) {
	if h.status < 200 || h.status == 204 || h.status == 304 || string(method) == "HEAD" {
		return framing{length: 0}, nil
	}
	te, hasTE := h.transferCodings()
	cl, hasCL, dupCL := h.get("content-length")
	switch {
	case hasTE && policy.EqualFold(te, "chunked"):
		return framing{chunked: true}, nil
	case hasTE:
		return framing{length: -1}, nil // read to the end of the connection
	case dupCL:
		return framing{}, errors.New("more than one Content-Length in a response")
	case hasCL:
		n, ok := parseLength(cl)
		if !ok {
			return framing{}, errors.New("invalid Content-Length in a response")
		}
		return framing{length: n}, nil
	}
	return framing{length: -1}, nil
}

// transferCodings joins every Transfer-Encoding field's value.
func (h *head) transferCodings() ([]byte, bool) {
	var out []byte
	found := false
	for _, f := range h.fields {
		if policy.EqualFold(f.name, "transfer-encoding") {
			if found {
				out = append(append(out, ','), f.value...)
			} else {
				out, found = f.value, true
			}
		}
	}
	return bytes.Trim(out, " \t"), found
}

func lastCoding(te []byte) []byte {
	if i := bytes.LastIndexByte(te, ','); i >= 0 {
		te = te[i+1:]
	}
	if i := bytes.IndexByte(te, ';'); i >= 0 {
		te = te[:i]
	}
	return bytes.Trim(te, " \t")
}

// parseLength reads 1*DIGIT, up to 2^62.
func parseLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
