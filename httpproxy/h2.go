package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// HTTP/2 on an HTTPS listener (SPEC section 6a): a TLS connection whose
// ALPN chose "h2" is served by net/http's HTTP/2 server (Go's bundled
// x/net/http2, with its defenses against rapid reset, CVE-2023-44487, and
// CONTINUATION floods), one that chose "http/1.1" (or nothing) by clb's own
// HTTP/1.1 server as on a plain listener, WebSocket upgrades included.
//
// Each HTTP/2 stream is then one HTTP/1.1 request served by the same code
// as any other (serveRequest): the stream's request is written out as an
// HTTP/1.1 head and body on an in-memory connection, read back by clb's
// strict parser, routed, forwarded and answered exactly as on HTTP/1.1 (key,
// cookies, X-CLB-* fields, sticky repair, retry on the replica partner,
// framing rules, flood control, access log), and the HTTP/1.1 response clb
// writes is relayed to the stream. So there is one policy and one set of
// framing rules, and what reaches an instance is always HTTP/1.1 framed by
// clb: HTTP/2's framing ends at clb. The price is a copy of each request
// and response through memory, and two goroutines per stream.

// HTTP/2 limits, set explicitly rather than left to net/http's defaults.
const (
	// h2MaxStreams bounds a connection's concurrent streams; the rapid
	// reset defense counts against it too.
	h2MaxStreams = 250
	// h2MaxFrame is the largest frame clb accepts: RFC 9113's minimum.
	h2MaxFrame = 16 << 10
	// h2HeaderTable bounds the HPACK dynamic tables both ways.
	h2HeaderTable = 4 << 10
	// h2StreamWindow and h2ConnWindow bound what a client may send ahead of
	// clb reading it: a stream's body, and all of a connection's.
	h2StreamWindow = 256 << 10
	h2ConnWindow   = 1 << 20
	// h2PingTimeout closes a connection whose client does not answer a
	// PING within it.
	h2PingTimeout = 15 * time.Second
)

// h2Server serves the HTTP/2 connections of a Server.
type h2Server struct {
	srv  *http.Server
	ln   *connListener
	done chan struct{} // closed when srv.Serve has returned

	mu     sync.Mutex
	closed map[net.Conn]chan struct{} // closed when the connection ends
}

func newH2Server(s *Server) *h2Server {
	l := s.o.Limits
	h := &h2Server{ln: newConnListener(), done: make(chan struct{}), closed: map[net.Conn]chan struct{}{}}
	h.srv = &http.Server{
		Handler: http.HandlerFunc(s.serveStream),
		// The header list (HPACK decoded) is bounded as an HTTP/1.1 head
		// is: a CONTINUATION flood past it ends the connection.
		MaxHeaderBytes: l.MaxHeaderBytes,
		IdleTimeout:    l.IdleTimeout,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          h2MaxStreams,
			MaxDecoderHeaderTableSize:     h2HeaderTable,
			MaxEncoderHeaderTableSize:     h2HeaderTable,
			MaxReadFrameSize:              h2MaxFrame,
			MaxReceiveBufferPerConnection: h2ConnWindow,
			MaxReceiveBufferPerStream:     h2StreamWindow,
			SendPingTimeout:               l.IdleTimeout,
			PingTimeout:                   h2PingTimeout,
			WriteByteTimeout:              l.WriteTimeout,
		},
		ErrorLog: zap.NewStdLog(s.log.Named("h2").WithOptions(zap.IncreaseLevel(zapcore.DebugLevel))),
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				h.mu.Lock()
				if ch := h.closed[c]; ch != nil {
					close(ch)
					delete(h.closed, c)
				}
				h.mu.Unlock()
			}
		},
	}
	return h
}

// start serves the connections serve hands over, until shutdown.
func (h *h2Server) start() {
	go func() {
		defer close(h.done)
		_ = h.srv.Serve(h.ln)
	}()
}

// serve hands c, a TLS connection that chose h2, to the HTTP/2 server and
// returns when it has closed.
func (h *h2Server) serve(c *tls.Conn) {
	ch := make(chan struct{})
	h.mu.Lock()
	h.closed[c] = ch
	h.mu.Unlock()
	if !h.ln.push(c) {
		h.mu.Lock()
		delete(h.closed, c)
		h.mu.Unlock()
		return
	}
	<-ch
}

// shutdown sends GOAWAY to every connection and waits for the streams in
// flight until ctx ends, then closes what is left; the HTTP/2 server has
// stopped when it returns.
func (h *h2Server) shutdown(ctx context.Context) {
	if err := h.srv.Shutdown(ctx); err != nil {
		_ = h.srv.Close()
	}
	<-h.done
}

// connListener is a listener whose connections are pushed to it: the
// HTTP/2 server's, fed by the HTTPS accept loop.
type connListener struct {
	conns chan net.Conn
	stop  chan struct{}
	once  sync.Once
}

func newConnListener() *connListener {
	return &connListener{conns: make(chan net.Conn), stop: make(chan struct{})}
}

func (l *connListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.stop:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.stop:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.stop) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{} }

// handshake finishes a TLS client connection's handshake within the head
// timeout: a client that connects and says nothing holds its slot no
// longer than one that sends half a head.
func (s *Server) handshake(c *tls.Conn) bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.o.Limits.ReadHeaderTimeout)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		s.o.Metrics.Error("http", "tls_handshake")
		if ce := s.log.Check(zap.DebugLevel, "tls handshake failed"); ce != nil {
			ce.Write(zap.Stringer("client", c.RemoteAddr()), zap.Error(err))
		}
		return false
	}
	return true
}

// serveStream serves one HTTP/2 stream as an HTTP/1.1 request (see the
// comment at the top of this file).
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	head, chunked := appendStreamHead(nil, r)
	var body io.Reader = r.Body
	if chunked {
		body = &chunker{src: r.Body}
	}
	pr, pw := io.Pipe()
	conn := &streamConn{r: io.MultiReader(bytes.NewReader(head), body), w: pw, rc: http.NewResponseController(w), remote: remoteAddr(r.RemoteAddr)}
	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		relayStream(w, r, pr)
	}()
	cc := s.newClientConn(conn, conn.remote.AddrPort().Addr().Unmap())
	cc.remote = conn.remote.IP.String()
	s.serveRequest(cc) // one request: the head says Connection: close
	s.giveBuffers(cc)
	_ = pw.Close()
	<-relayed
}

// appendStreamHead writes an HTTP/2 request's head as HTTP/1.1. The
// request's own framing (Content-Length, or a body of unknown length sent
// chunked) goes with it, and Connection: close, as the in-memory connection
// carries one request. Fields net/http's HTTP/2 server lets through are
// valid HTTP/2 fields; clb's HTTP/1.1 parser checks them again as it
// checks every head.
func appendStreamHead(dst []byte, r *http.Request) (_ []byte, chunked bool) {
	dst = append(dst, r.Method...)
	dst = append(dst, ' ')
	dst = append(dst, r.RequestURI...)
	dst = append(dst, " HTTP/1.1\r\n"...)
	if r.Host != "" {
		dst = append(dst, "Host: "...)
		dst = append(dst, r.Host...)
		dst = append(dst, "\r\n"...)
	}
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		switch name {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect":
			// Host is :authority, above; the framing is clb's; HTTP/2's
			// server answers Expect: 100-continue itself.
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, v := range r.Header[name] {
			dst = append(dst, name...)
			dst = append(dst, ": "...)
			dst = append(dst, v...)
			dst = append(dst, "\r\n"...)
		}
	}
	switch {
	case r.ContentLength > 0:
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, r.ContentLength, 10)
		dst = append(dst, "\r\n"...)
	case r.ContentLength < 0:
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
		chunked = true
	case r.Method == "POST" || r.Method == "PUT" || r.Method == "PATCH":
		dst = append(dst, "Content-Length: 0\r\n"...)
	}
	return append(dst, "Connection: close\r\n\r\n"...), chunked
}

// chunker frames a body of unknown length in HTTP/1.1 chunks.
type chunker struct {
	src  io.Reader
	buf  []byte // framed, not yet read
	off  int
	done bool
}

func (c *chunker) Read(p []byte) (int, error) {
	for c.off == len(c.buf) {
		if c.done {
			return 0, io.EOF
		}
		var data [16 << 10]byte
		n, err := c.src.Read(data[:])
		c.buf, c.off = c.buf[:0], 0
		if n > 0 {
			c.buf = strconv.AppendInt(c.buf, int64(n), 16)
			c.buf = append(c.buf, "\r\n"...)
			c.buf = append(c.buf, data[:n]...)
			c.buf = append(c.buf, "\r\n"...)
		}
		if errors.Is(err, io.EOF) {
			c.buf, c.done = append(c.buf, "0\r\n\r\n"...), true
		} else if err != nil {
			return 0, err
		}
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

// hopByHopResponse are the fields of clb's HTTP/1.1 response that HTTP/2
// does not carry (RFC 9113 8.2.2).
var hopByHopResponse = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Te", "Trailer"}

// relayStream reads the HTTP/1.1 response clb wrote for the stream and
// sends it on the stream: interim responses (103), then the final one, its
// body flushed as it comes. Whatever stops it (the client reset the
// stream) closes pr, so that clb's writes fail instead of waiting.
// relayBufs are a relay's reader of the pipe and its copy buffer: pooled,
// since a stream is one request (they were 32 KiB made per stream).
type relayBufs struct {
	br  *bufio.Reader
	buf []byte
}

var relayPool = sync.Pool{New: func() any {
	return &relayBufs{br: bufio.NewReaderSize(nil, 16<<10), buf: make([]byte, 16<<10)}
}}

func relayStream(w http.ResponseWriter, r *http.Request, pr *io.PipeReader) {
	defer pr.Close()
	rb := relayPool.Get().(*relayBufs)
	rb.br.Reset(pr)
	defer func() {
		rb.br.Reset(nil)
		relayPool.Put(rb)
	}()
	br, buf := rb.br, rb.buf
	rc := http.NewResponseController(w)
	for {
		res, err := http.ReadResponse(br, r)
		if err != nil {
			// clb closed without answering (it always answers what it
			// refuses; this is a client gone, or a bug).
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		h := w.Header()
		for name, vs := range res.Header {
			h[name] = vs
		}
		for _, name := range hopByHopResponse {
			h.Del(name)
		}
		if res.StatusCode >= 100 && res.StatusCode < 200 {
			w.WriteHeader(res.StatusCode)
			clear(h)
			continue
		}
		w.WriteHeader(res.StatusCode)
		for {
			n, err := res.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				if br.Buffered() == 0 {
					_ = rc.Flush()
				}
			}
			if err != nil {
				return
			}
		}
	}
}

// streamConn is the in-memory connection an HTTP/2 stream's request is
// served on: reads are the request's head and body, writes go to the
// relay. Its deadlines are the stream's: a read deadline bounds the body's
// arrival as on an HTTP/1.1 connection.
type streamConn struct {
	r      io.Reader
	w      *io.PipeWriter
	rc     *http.ResponseController
	remote *net.TCPAddr
}

func (c *streamConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *streamConn) Close() error                { return c.w.Close() }
func (c *streamConn) LocalAddr() net.Addr         { return &net.TCPAddr{} }
func (c *streamConn) RemoteAddr() net.Addr        { return c.remote }
func (c *streamConn) SetDeadline(t time.Time) error {
	return c.SetReadDeadline(t)
}
func (c *streamConn) SetReadDeadline(t time.Time) error {
	_ = c.rc.SetReadDeadline(t)
	return nil
}

// SetWriteDeadline: writes go to the relay, whose writes to the stream
// have HTTP/2's WriteByteTimeout.
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }

var _ net.Conn = (*streamConn)(nil)

func remoteAddr(s string) *net.TCPAddr {
	if a, err := net.ResolveTCPAddr("tcp", s); err == nil {
		return a
	}
	return &net.TCPAddr{}
}
