package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"clb/accesslog"
	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
)

// benchAnswer is the back end's answer to every request of the benchmarks.
const benchAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

// benchBackend answers every request head on every connection with
// benchAnswer, allocating nothing per request, so that the benchmark's
// allocations are clb's.
func benchBackend(b testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if len(line) == 2 {
						if _, err := io.WriteString(c, benchAnswer); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// BenchmarkRequest is one keep-alive GET through clb to an instance and
// back, on loopback, with the access log off and on (JSON to a discarding
// writer; every key, then one in a hundred).
func BenchmarkRequest(b *testing.B) {
	for _, c := range []struct {
		name   string
		on     bool
		sample float64
	}{{"access=off", false, 1}, {"access=on", true, 1}, {"access=on,sample=0.01", true, 0.01}} {
		b.Run(c.name, func(b *testing.B) {
			port := benchBackend(b)
			in := []config.Instance{{Name: "app1", Weight: 100, HTTP: config.HTTPAddr{Endpoint: config.Endpoint{
				Transport: "http", Host: "127.0.0.1", Port: port}}}}
			bal, err := balancer.New(in, loadfactor.DefaultParams())
			if err != nil {
				b.Fatal(err)
			}
			log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))
			access := accesslog.New(log)
			access.Set(c.on, c.sample)
			srv, err := NewServer("127.0.0.1:0", Options{Balancer: bal, Access: access})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = srv.Serve(ctx); close(done) }()
			defer func() { cancel(); <-done }()

			conn, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			reqs := make([][]byte, 1024)
			for i := range reqs {
				reqs[i] = fmt.Appendf(nil, "GET /item/%d?x=1 HTTP/1.1\r\nHost: bench\r\nCookie: CLBKEY=user%d\r\n\r\n", i, i)
			}
			body := make([]byte, 5)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := conn.Write(reqs[i%len(reqs)]); err != nil {
					b.Fatal(err)
				}
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						b.Fatal(err)
					}
					if len(line) == 2 {
						break
					}
					if bytes.HasPrefix(line, []byte("HTTP/1.1 ")) && !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
						b.Fatalf("%q", line)
					}
				}
				if _, err := io.ReadFull(br, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
