// Command idleclients opens N connections to a load balancer, sends one
// request on each (HTTP: GET with a CLBKEY cookie of its own; SIP over TCP:
// an OPTIONS of its own Call-ID), reads the answer, and then holds them all
// open, idle, until its standard input closes or it is signalled. It prints
// "ready OPENED FAILED" once every connection has had its answer (for
// bench/idle-memory.sh).
//
//	idleclients -proto http|sip -addr 127.0.0.1:18080 -n 9000
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	proto := flag.String("proto", "http", "http or sip (over TCP)")
	addr := flag.String("addr", "127.0.0.1:18080", "the load balancer")
	n := flag.Int("n", 9000, "connections")
	workers := flag.Int("workers", 32, "connections opened at a time")
	flag.Parse()

	var mu sync.Mutex
	conns := make([]net.Conn, 0, *n)
	var failed atomic.Int64
	next := make(chan int)
	var wg sync.WaitGroup
	for range *workers {
		wg.Go(func() {
			for i := range next {
				c, err := one(*proto, *addr, i)
				if err != nil {
					if failed.Add(1) <= 5 {
						fmt.Fprintf(os.Stderr, "connection %d: %v\n", i, err)
					}
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	for i := range *n {
		next <- i
	}
	close(next)
	wg.Wait()
	fmt.Printf("ready %d %d\n", len(conns), failed.Load())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); stop <- syscall.SIGTERM }()
	<-stop
	for _, c := range conns {
		c.Close()
	}
}

// one opens connection i and has its request answered.
func one(proto, addr string, i int) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 4096)
	if proto == "http" {
		err = httpRequest(c, br, i)
	} else {
		err = sipOptions(c, br, i)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	if br.Buffered() > 0 {
		c.Close()
		return nil, fmt.Errorf("bytes after the answer")
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func httpRequest(c net.Conn, br *bufio.Reader, i int) error {
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: lb\r\nCookie: CLBKEY=s%d\r\n\r\n", i); err != nil {
		return err
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, res.Body)
	if err == nil && res.StatusCode != 200 {
		err = fmt.Errorf("status %d", res.StatusCode)
	}
	return err
}

func sipOptions(c net.Conn, br *bufio.Reader, i int) error {
	local := c.LocalAddr().String()
	if _, err := fmt.Fprintf(c, "OPTIONS sip:ping@%s SIP/2.0\r\n"+
		"Via: SIP/2.0/TCP %s;branch=z9hG4bK-idle-%d\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:idle%d@bench>;tag=t%d\r\n"+
		"To: <sip:ping@%s>\r\n"+
		"Call-ID: idle-%d@bench\r\n"+
		"CSeq: 1 OPTIONS\r\n"+
		"Contact: <sip:idle%d@%s;transport=tcp>\r\n"+
		"Content-Length: 0\r\n\r\n", addr(c), local, i, i, i, addr(c), i, i, local); err != nil {
		return err
	}
	status, length := "", 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
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
	if _, err := io.CopyN(io.Discard, br, int64(length)); err != nil {
		return err
	}
	if !strings.HasPrefix(status, "SIP/2.0 200") {
		return fmt.Errorf("answer %q", status)
	}
	return nil
}

func addr(c net.Conn) string { return c.RemoteAddr().String() }
