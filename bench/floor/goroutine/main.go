// Command goroutine is the floor of the HTTP benchmark: the least a Go
// goroutine-per-connection proxy does per request, to tell how much of
// clb's CPU per request is the I/O model and how much its own work. It
// forwards bodiless requests unchanged to the back end the CLBKEY cookie
// hashes to, over one upstream connection per client and back end, and
// relays Content-Length responses; no parsing beyond that, no routing
// table, no header rewriting, no timeouts. A benchmark tool, not part of
// clb: it trusts its peers.
package main

import (
	"bufio"
	"flag"
	"log"
	"net"
	"strings"

	"floor/wire"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "listen address")
	backends := flag.String("backends", "127.0.0.1:18081,127.0.0.1:18082,127.0.0.1:18083", "back ends, comma-separated")
	flag.Parse()
	ups := strings.Split(*backends, ",")
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(c, ups)
	}
}

type upstream struct {
	c  net.Conn
	br *bufio.Reader
}

func serve(c net.Conn, ups []string) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 16<<10)
	conns := make([]*upstream, len(ups))
	defer func() {
		for _, u := range conns {
			if u != nil {
				u.c.Close()
			}
		}
	}()
	var head []byte
	for {
		var err error
		if head, err = readHead(br, head[:0]); err != nil {
			return
		}
		i := wire.Pick(head, len(ups))
		u := conns[i]
		if u == nil {
			uc, err := net.Dial("tcp", ups[i])
			if err != nil {
				return
			}
			u = &upstream{c: uc, br: bufio.NewReaderSize(uc, 16<<10)}
			conns[i] = u
		}
		if _, err := u.c.Write(head); err != nil {
			return
		}
		res, err := readHead(u.br, head[:0])
		if err != nil {
			return
		}
		n := wire.ContentLength(res)
		if n > u.br.Buffered() {
			return // the floor relays bodies that came with their head
		}
		body, _ := u.br.Peek(n)
		res = append(res, body...)
		_, _ = u.br.Discard(n)
		if _, err := c.Write(res); err != nil {
			return
		}
		head = res
	}
}

// readHead appends one message head, up to its empty line, to dst.
func readHead(br *bufio.Reader, dst []byte) ([]byte, error) {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return dst, err
		}
		dst = append(dst, line...)
		if len(line) <= 2 {
			return dst, nil
		}
	}
}
