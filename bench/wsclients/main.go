// Command wsclients holds idle SIP clients for bench/wss-idle.sh: it opens
// n wss:// (or ws://) connections with subprotocol sip, or tls:// (or
// tcp://) SIP stream connections, sends one REGISTER on each and waits for
// its 200, then holds them all, answering WebSocket pings, until SIGTERM.
// It prints "ready N failed M" once every connection has its 200 (or
// failed). The same program for every transport, so that a balancer's
// figures per transport differ by the transport alone. A benchmark tool,
// not part of clb and not a test.
//
//	wsclients -url wss://127.0.0.1:7443/sip -n 9000
//	wsclients -url tls://127.0.0.1:5061 -n 9000
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

func main() {
	url := flag.String("url", "", "clb's ws:// or wss:// listener")
	n := flag.Int("n", 1000, "connections")
	parallel := flag.Int("parallel", 64, "connections opened at once")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "usage: wsclients -url wss://HOST:PORT/PATH -n N")
		os.Exit(2)
	}
	d := ws.Dialer{Protocols: []string{"sip"}, Timeout: 10 * time.Second,
		TLSConfig: &tls.Config{InsecureSkipVerify: true}} // the bench's self-signed certificate
	var ok, failed atomic.Int64
	conns := make([]net.Conn, *n)
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	for i := range *n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := open(d, *url, i)
			if err != nil {
				if failed.Add(1) <= 5 {
					fmt.Fprintf(os.Stderr, "wsclients: connection %d: %v\n", i, err)
				}
				return
			}
			conns[i] = c
			ok.Add(1)
		})
	}
	wg.Wait()
	fmt.Printf("ready %d failed %d\n", ok.Load(), failed.Load())
	stream := strings.HasPrefix(*url, "tcp:") || strings.HasPrefix(*url, "tls:")
	for _, c := range conns {
		if c != nil {
			if stream {
				go holdStream(c)
			} else {
				go hold(c)
			}
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// open opens connection i and registers on it.
func open(d ws.Dialer, url string, i int) (net.Conn, error) {
	scheme, rest, _ := strings.Cut(url, "://")
	msg := registerMessage(strings.ToUpper(scheme), i)
	if scheme == "tcp" || scheme == "tls" {
		return registerStream(scheme, strings.TrimSuffix(rest, "/"), msg, d.TLSConfig)
	}
	return register(d, url, msg)
}

// registerMessage is connection i's REGISTER, as a browser phone sends
// one (over a stream the same, with the stream's transport in its Via).
func registerMessage(transport string, i int) string {
	return fmt.Sprintf("REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/%s c%d.invalid;branch=z9hG4bK%dr\r\n"+
		"From: <sip:u%d@example.com>;tag=t%d\r\nTo: <sip:u%d@example.com>\r\nCall-ID: reg%d\r\nCSeq: 1 REGISTER\r\n"+
		"Contact: <sip:u%d@c%d.invalid;transport=%s>;expires=600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		transport, i, i, i, i, i, i, i, i, strings.ToLower(transport))
}

// register opens a WebSocket connection and has msg answered 2xx on it.
func register(d ws.Dialer, url, msg string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	if br != nil {
		ws.PutReader(br)
	}
	if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		data, err := wsutil.ReadServerText(c)
		if err != nil {
			c.Close()
			return nil, err
		}
		if strings.HasPrefix(string(data), "SIP/2.0 2") {
			_ = c.SetReadDeadline(time.Time{})
			return c, nil
		}
		if !strings.HasPrefix(string(data), "SIP/2.0 1") {
			c.Close()
			return nil, fmt.Errorf("REGISTER answered %q", strings.SplitN(string(data), "\r\n", 2)[0])
		}
	}
}

// registerStream opens a SIP stream connection (scheme tcp or tls) to
// addr and has msg answered 2xx on it, reading answers framed by
// Content-Length.
func registerStream(scheme, addr, msg string, tc *tls.Config) (net.Conn, error) {
	nd := net.Dialer{Timeout: 10 * time.Second}
	var c net.Conn
	var err error
	if scheme == "tls" {
		c, err = tls.DialWithDialer(&nd, "tcp", addr, tc)
	} else {
		c, err = nd.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	for {
		status, err := readStreamMessage(br)
		if err != nil {
			c.Close()
			return nil, err
		}
		if strings.HasPrefix(status, "SIP/2.0 2") {
			if br.Buffered() > 0 {
				c.Close()
				return nil, fmt.Errorf("bytes after the answer")
			}
			_ = c.SetDeadline(time.Time{})
			return c, nil
		}
		if !strings.HasPrefix(status, "SIP/2.0 1") {
			c.Close()
			return nil, fmt.Errorf("REGISTER answered %q", status)
		}
	}
}

// readStreamMessage reads one SIP message from a stream and returns its
// first line.
func readStreamMessage(br *bufio.Reader) (string, error) {
	status, length := "", 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if status == "" {
			status = line
			continue
		}
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		if n := strings.ToLower(strings.TrimSpace(name)); n == "content-length" || n == "l" {
			length, _ = strconv.Atoi(strings.TrimSpace(value))
		}
	}
	_, err := io.CopyN(io.Discard, br, int64(length))
	return status, err
}

// holdStream reads (and drops) until a stream connection ends.
func holdStream(c net.Conn) { _, _ = io.Copy(io.Discard, c) }

// hold reads (and so answers pings) until the connection ends.
func hold(c net.Conn) {
	for {
		if _, err := wsutil.ReadServerText(c); err != nil {
			return
		}
	}
}
