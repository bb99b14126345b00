package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// errBody is a malformed body: the connection it came on cannot be used
// again, nor can the one it was being copied to.
var errBody = errors.New("malformed message body")

// copyBody copies a body framed as f from src to dst as it is on the wire
// (a chunked body stays chunked), checking the chunked framing as it goes.
// With dechunk, a chunked body is written without its framing (for an
// HTTP/1.0 client). written reports whether anything reached dst.
func copyBody(dst io.Writer, src *bufio.Reader, f framing, dechunk bool) (written bool, err error) {
	switch {
	case f.chunked:
		return copyChunked(dst, src, dechunk)
	case f.length > 0:
		n, err := copyN(dst, src, f.length)
		return n > 0, err
	case f.length < 0:
		n, err := io.Copy(dst, src)
		return n > 0, err
	}
	return false, nil
}

// copyN copies n bytes from src's buffer to dst, refilling it as needed;
// a stream that ends first is io.ErrUnexpectedEOF. (io.CopyN allocates a
// LimitReader per call.)
func copyN(dst io.Writer, src *bufio.Reader, n int64) (written int64, err error) {
	for written < n {
		if src.Buffered() == 0 {
			if _, err := src.Peek(1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return written, err
			}
		}
		p, _ := src.Peek(int(min(int64(src.Buffered()), n-written)))
		m, err := dst.Write(p)
		_, _ = src.Discard(m)
		written += int64(m)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// maxInline bounds a body sent in the same write as its head.
const maxInline = 4 << 10

// appendInline appends the body framed as f to head when src holds all of
// it already and it is small (a Content-Length of at most maxInline),
// taking it from src: head and body then go in one write, with no copy
// through a writer's buffer. False: the body is to be copied (copyBody).
func appendInline(head []byte, src *bufio.Reader, f framing) ([]byte, bool) {
	if f.chunked || f.length < 0 || f.length > maxInline || int(f.length) > src.Buffered() {
		return head, false
	}
	n := int(f.length)
	p, _ := src.Peek(n)
	head = append(head, p...)
	_, _ = src.Discard(n)
	return head, true
}

const maxChunkLine = 4096

// copyChunked copies chunks, their extensions and the trailer section,
// refusing anything RFC 9112 7.1 does not allow.
func copyChunked(dst io.Writer, src *bufio.Reader, dechunk bool) (written bool, err error) {
	for {
		line, err := readLine(src)
		if err != nil {
			return written, err
		}
		size, ok := chunkSize(line)
		if !ok {
			return written, errBody
		}
		if !dechunk {
			if _, err := dst.Write(line); err != nil {
				return true, err
			}
			written = true
		}
		if size == 0 {
			return copyTrailer(dst, src, dechunk, written)
		}
		n, err := copyN(dst, src, size)
		written = written || n > 0
		if err != nil {
			return written, err
		}
		crlf, err := readLine(src)
		if err != nil {
			return written, err
		}
		if len(crlf) != 2 {
			return written, errBody
		}
		if !dechunk {
			if _, err := dst.Write(crlf); err != nil {
				return true, err
			}
		}
	}
}

func copyTrailer(dst io.Writer, src *bufio.Reader, dechunk, written bool) (bool, error) {
	for fields := 0; ; fields++ {
		line, err := readLine(src)
		if err != nil {
			return written, err
		}
		if fields > 100 {
			return written, errBody
		}
		if len(line) > 2 {
			if _, err := parseField(line[:len(line)-2]); err != nil {
				return written, errBody
			}
		}
		if !dechunk {
			if _, err := dst.Write(line); err != nil {
				return true, err
			}
		}
		if len(line) == 2 {
			return written, nil
		}
	}
}

// readLine reads one CRLF-ended line (with its CRLF) of at most
// maxChunkLine bytes. The slice is valid until the next read.
func readLine(src *bufio.Reader) ([]byte, error) {
	line, err := src.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull || len(line) > maxChunkLine:
		return nil, errBody
	case err == io.EOF:
		return nil, io.ErrUnexpectedEOF
	case err != nil:
		return nil, err
	case len(line) < 2 || line[len(line)-2] != '\r':
		return nil, errBody
	}
	return line, nil
}

// chunkSize reads "HEX[;ext]CRLF": the size, with extensions checked to be
// free of control characters.
func chunkSize(line []byte) (int64, bool) {
	line = line[:len(line)-2]
	hex, ext, _ := bytes.Cut(line, []byte(";"))
	hex = bytes.TrimRight(hex, " \t")
	if len(hex) == 0 || len(hex) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range hex {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	for _, c := range ext {
		if c < ' ' && c != '\t' || c == 0x7f {
			return 0, false
		}
	}
	return n, true
}
