// Command gnet is bench/floor/goroutine on gnet v2's event loops: the same least
// work per request (bodiless requests forwarded unchanged to the back end
// the CLBKEY cookie hashes to, one upstream connection per client and back
// end, dialed onto the client's own loop with EventLoop().Register;
// Content-Length responses), to measure what the I/O model alone costs per
// request against the goroutine-per-connection floor and HAProxy. A
// benchmark tool in a module of its own, so that clb does not depend on
// gnet: it trusts its peers, has no timeouts and handles one request at a
// time per client.
package main

import (
	"bytes"
	"context"
	"flag"
	"log"
	"net"
	"strings"

	"github.com/panjf2000/gnet/v2"

	"floor/wire"
)

type proxy struct {
	gnet.BuiltinEventEngine
	ups []net.Addr
}

// client is a client connection's state, on its loop.
type client struct {
	c       gnet.Conn
	ups     []*upstream
	waiting *upstream // the one whose response is awaited
}

// upstream is a connection to a back end; c is nil until it is open.
type upstream struct {
	c      gnet.Conn
	client *client
	queued []byte // a request to send once it is open
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "listen address")
	backends := flag.String("backends", "127.0.0.1:18081,127.0.0.1:18082,127.0.0.1:18083", "back ends, comma-separated")
	flag.Parse()
	p := &proxy{}
	for _, b := range strings.Split(*backends, ",") {
		a, err := net.ResolveTCPAddr("tcp", b)
		if err != nil {
			log.Fatal(err)
		}
		p.ups = append(p.ups, a)
	}
	log.Fatal(gnet.Run(p, "tcp://"+*addr, gnet.WithMulticore(true), gnet.WithTCPNoDelay(gnet.TCPNoDelay), gnet.WithReuseAddr(true)))
}

func (p *proxy) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if u, ok := c.Context().(*upstream); ok {
		u.c = c
		if u.queued != nil {
			_, _ = c.Write(u.queued)
			u.queued = nil
		}
		return nil, gnet.None
	}
	c.SetContext(&client{c: c, ups: make([]*upstream, len(p.ups))})
	return nil, gnet.None
}

func (p *proxy) OnClose(c gnet.Conn, _ error) gnet.Action {
	switch x := c.Context().(type) {
	case *client:
		for _, u := range x.ups {
			if u != nil && u.c != nil {
				_ = u.c.Close()
			}
		}
	case *upstream:
		_ = x.client.c.Close()
	}
	return gnet.None
}

func (p *proxy) OnTraffic(c gnet.Conn) gnet.Action {
	switch x := c.Context().(type) {
	case *client:
		return p.request(x)
	case *upstream:
		return p.response(x)
	}
	return gnet.Close
}

// request forwards the client's next request head, if it has one and none
// is under way.
func (p *proxy) request(cl *client) gnet.Action {
	if cl.waiting != nil {
		return gnet.None
	}
	buf, _ := cl.c.Peek(-1)
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return gnet.None
	}
	head := buf[:end+4]
	i := wire.Pick(head, len(p.ups))
	u := cl.ups[i]
	if u == nil {
		u = &upstream{client: cl, queued: bytes.Clone(head)}
		cl.ups[i] = u
		ctx := gnet.NewContext(context.Background(), u)
		if _, err := cl.c.EventLoop().Register(ctx, p.ups[i]); err != nil {
			return gnet.Close
		}
	} else if u.c == nil {
		return gnet.Close // one request at a time: cannot happen
	} else if _, err := u.c.Write(head); err != nil {
		return gnet.Close
	}
	_, _ = cl.c.Discard(len(head))
	cl.waiting = u
	return gnet.None
}

// response relays a whole response to the client, then the client's next
// request if it came meanwhile.
func (p *proxy) response(u *upstream) gnet.Action {
	buf, _ := u.c.Peek(-1)
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return gnet.None
	}
	n := end + 4 + wire.ContentLength(buf[:end+4])
	if len(buf) < n {
		return gnet.None
	}
	if _, err := u.client.c.Write(buf[:n]); err != nil {
		return gnet.Close
	}
	_, _ = u.c.Discard(n)
	u.client.waiting = nil
	if u.client.c.InboundBuffered() > 0 {
		_ = u.client.c.Wake(nil)
	}
	return gnet.None
}
