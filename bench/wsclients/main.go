// Command wsclients holds idle SIP-over-WebSocket clients for
// bench/wss-idle.sh: it opens n wss:// (or ws://) connections to clb with
// subprotocol sip, sends one REGISTER on each and waits for its 200, then
// holds them all, answering clb's pings, until SIGTERM. It prints
// "ready N" once every connection has its 200. A benchmark tool, not part
// of clb and not a test.
//
//	wsclients -url wss://127.0.0.1:7443/sip -n 9000
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
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
			c, err := register(d, *url, i)
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
	for _, c := range conns {
		if c != nil {
			go hold(c)
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

// register opens connection i and registers on it: a REGISTER as a
// browser phone sends one, and its 200 awaited.
func register(d ws.Dialer, url string, i int) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	if br != nil {
		ws.PutReader(br)
	}
	transport := strings.ToUpper(strings.SplitN(url, ":", 2)[0])
	msg := fmt.Sprintf("REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/%s c%d.invalid;branch=z9hG4bK%dr\r\n"+
		"From: <sip:u%d@example.com>;tag=t%d\r\nTo: <sip:u%d@example.com>\r\nCall-ID: reg%d\r\nCSeq: 1 REGISTER\r\n"+
		"Contact: <sip:u%d@c%d.invalid;transport=ws>;expires=600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", transport, i, i, i, i, i, i, i, i)
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

// hold reads (and so answers pings) until the connection ends.
func hold(c net.Conn) {
	for {
		if _, err := wsutil.ReadServerText(c); err != nil {
			return
		}
	}
}
