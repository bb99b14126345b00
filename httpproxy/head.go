package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"clb/policy"
)

// field is one header field of a head: spans of the head's buffer, and
// which of the fields clb reads it is.
type field struct {
	name, value []byte
	kind        fieldKind
}

// fieldKind names the fields clb reads or rewrites itself. It is found once
// per field as the head is parsed, so that the walks over a head (framing,
// Connection, hop-by-hop, X-CLB-*, cookies) compare no names again.
type fieldKind uint8

const (
	otherField fieldKind = iota
	hostField
	contentLengthField
	transferEncodingField
	connectionField
	keepAliveField
	proxyConnectionField
	teField
	trailerField
	upgradeField
	expectField
	cookieField
	viaField
	xForwardedForField
	xForwardedProtoField
	xForwardedHostField
	clbField // X-CLB-*
	fieldKinds
)

// kindOf is the kind of a field named name, in any case.
func kindOf(name []byte) fieldKind {
	if len(name) < len(kindsByLength) {
		for _, k := range kindsByLength[len(name)] {
			if policy.EqualFold(name, kindNames[k]) {
				return k
			}
		}
	}
	if policy.IsCLBField(name) {
		return clbField
	}
	return otherField
}

// kindsByLength are the kinds named, by the length of their names (at most
// two of each).
var kindsByLength = func() (t [len("transfer-encoding") + 1][]fieldKind) {
	for k := otherField + 1; k < clbField; k++ {
		t[len(kindNames[k])] = append(t[len(kindNames[k])], k)
	}
	return t
}()

var kindNames = [fieldKinds]string{
	hostField: "host", contentLengthField: "content-length", transferEncodingField: "transfer-encoding",
	connectionField: "connection", keepAliveField: "keep-alive", proxyConnectionField: "proxy-connection",
	teField: "te", trailerField: "trailer", upgradeField: "upgrade", expectField: "expect",
	cookieField: "cookie", viaField: "via", xForwardedForField: "x-forwarded-for",
	xForwardedProtoField: "x-forwarded-proto", xForwardedHostField: "x-forwarded-host",
}

// hopByHop: the kinds of field that concern one connection only (RFC 9110
// 7.6.1), plus Content-Length, which clb sets itself.
func (k fieldKind) hopByHop() bool {
	switch k {
	case connectionField, keepAliveField, proxyConnectionField, teField, trailerField,
		transferEncodingField, upgradeField, contentLengthField:
		return true
	}
	return false
}

// connectionTokens is what a head's Connection fields say, read once.
type connectionTokens struct {
	close, upgrade bool
	// others: they list a name other than close, keep-alive and upgrade,
	// a field meant for this hop only (connectionListed).
	others bool
}

func (t *connectionTokens) add(value []byte) {
	for v := value; len(v) > 0; {
		var item []byte
		item, v, _ = bytes.Cut(v, []byte(","))
		switch item = trimOWS(item); {
		case len(item) == 0:
		case policy.EqualFold(item, "close"):
			t.close = true
		case policy.EqualFold(item, "upgrade"):
			t.upgrade = true
		case policy.EqualFold(item, "keep-alive"):
		default:
			t.others = true
		}
	}
}

// head is an HTTP/1.x message head as received: the start line's parts and
// the fields, all slices of buf. It is parsed strictly, so that clb and the
// instance behind it cannot disagree about where a message ends (request
// smuggling): anything ambiguous is an error.
type head struct {
	buf    []byte
	fields []field
	count  [fieldKinds]uint8 // fields of each kind, up to 255
	conn   connectionTokens

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
	h.count, h.conn = [fieldKinds]uint8{}, connectionTokens{}
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
		f.kind = kindOf(f.name)
		if h.count[f.kind] < 255 {
			h.count[f.kind]++
		}
		if f.kind == connectionField {
			h.conn.add(f.value)
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
	return field{name: name, value: trimOWS(value)}, nil
}

// trimOWS drops the optional white space (SP, HTAB) around b; bytes.Trim
// with a cutset builds its set on every call, which showed in profiles.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
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

// first is the value of the first field of kind k, with n the number of
// such fields.
func (h *head) first(k fieldKind) (value []byte, n int) {
	if n = int(h.count[k]); n == 0 {
		return nil, 0
	}
	for _, f := range h.fields {
		if f.kind == k {
			return f.value, n
		}
	}
	return nil, 0
}

// last is the value of the last field of kind k (nil: none).
func (h *head) last(k fieldKind) []byte {
	if h.count[k] == 0 {
		return nil
	}
	for i := len(h.fields) - 1; i >= 0; i-- {
		if h.fields[i].kind == k {
			return h.fields[i].value
		}
	}
	return nil
}

// has reports whether some field of kind k lists token among its
// comma-separated values (case-insensitive), as Upgrade and Expect do.
func (h *head) has(k fieldKind, token string) bool {
	if h.count[k] == 0 {
		return false
	}
	for _, f := range h.fields {
		if f.kind != k {
			continue
		}
		for v := f.value; len(v) > 0; {
			var item []byte
			item, v, _ = bytes.Cut(v, []byte(","))
			if policy.EqualFold(trimOWS(item), token) {
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
	te, nTE := h.first(transferEncodingField)
	cl, nCL := h.first(contentLengthField)
	switch {
	case nCL > 1:
		return framing{}, bad("more than one Content-Length")
	case nTE > 0 && nCL > 0:
		return framing{}, bad("both Content-Length and Transfer-Encoding")
	case nTE > 0 && h.minor == 0:
		return framing{}, bad("Transfer-Encoding in HTTP/1.0")
	case nTE > 0:
		if nTE > 1 || !policy.EqualFold(te, "chunked") {
			if last := lastCoding(h.last(transferEncodingField)); !policy.EqualFold(last, "chunked") {
				return framing{}, bad("Transfer-Encoding whose last coding is not chunked")
			}
			return framing{}, &errHead{501, "transfer coding not implemented"}
		}
		return framing{chunked: true}, nil
	case nCL == 1:
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
	te, nTE := h.first(transferEncodingField)
	cl, nCL := h.first(contentLengthField)
	switch {
	case nTE == 1 && policy.EqualFold(te, "chunked"):
		return framing{chunked: true}, nil
	case nTE > 0:
		return framing{length: -1}, nil // read to the end of the connection
	case nCL > 1:
		return framing{}, errors.New("more than one Content-Length in a response")
	case nCL == 1:
		n, ok := parseLength(cl)
		if !ok {
			return framing{}, errors.New("invalid Content-Length in a response")
		}
		return framing{length: n}, nil
	}
	return framing{length: -1}, nil
}

func lastCoding(te []byte) []byte {
	if i := bytes.LastIndexByte(te, ','); i >= 0 {
		te = te[i+1:]
	}
	if i := bytes.IndexByte(te, ';'); i >= 0 {
		te = te[:i]
	}
	return trimOWS(te)
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
