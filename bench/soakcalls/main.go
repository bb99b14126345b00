// Command soakcalls is bench/soak.sh's SIP load: complete calls over UDP
// (INVITE, its 200, ACK and BYE through the load balancer's Record-Route,
// BYE's 200) at a steady rate, each from one of N distinct source addresses
// on 127.0.0.0/8 (127.1.0.0 on), so that the balancer sees as many
// clients. Requests are retransmitted every 500 ms; a call that gets no
// final answer within 8 s, or a non-2xx, fails. It prints one line of
// counts when done, and one every -every to standard error.
//
//	soakcalls -lb 127.0.0.1:25060 -rate 500 -sources 100000 -d 5m
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	lb := flag.String("lb", "127.0.0.1:25060", "the load balancer's SIP UDP address")
	rate := flag.Float64("rate", 500, "calls per second")
	sources := flag.Int("sources", 100_000, "distinct source addresses")
	d := flag.Duration("d", 5*time.Minute, "how long to start calls")
	workers := flag.Int("workers", 256, "calls at a time, at most")
	every := flag.Duration("every", 10*time.Second, "progress line interval")
	flag.Parse()
	dst, err := net.ResolveUDPAddr("udp", *lb)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var ok, failed, started, late atomic.Int64 // late: ticks that found every worker busy
	var firstErr sync.Once
	tickets := make(chan int, *workers)
	var wg sync.WaitGroup
	for range *workers {
		wg.Go(func() {
			buf := make([]byte, 65536)
			for i := range tickets {
				if err := call(dst, source(i%*sources), i, buf); err != nil {
					failed.Add(1)
					firstErr.Do(func() { fmt.Fprintf(os.Stderr, "call %d: %v\n", i, err) })
				} else {
					ok.Add(1)
				}
			}
		})
	}
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(*every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				fmt.Fprintf(os.Stderr, "progress started=%d ok=%d failed=%d late=%d\n", started.Load(), ok.Load(), failed.Load(), late.Load())
			case <-stop:
				return
			}
		}
	}()
	start := time.Now()
	for i := 0; ; i++ {
		due := start.Add(time.Duration(float64(i) / *rate * float64(time.Second)))
		if due.Sub(start) >= *d {
			break
		}
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		select {
		case tickets <- i:
			started.Add(1)
		default:
			late.Add(1) // every worker busy: the rate is not kept, counted
			tickets <- i
			started.Add(1)
		}
	}
	close(tickets)
	wg.Wait()
	close(stop)
	fmt.Printf("calls=%d ok=%d failed=%d late=%d seconds=%.0f\n", started.Load(), ok.Load(), failed.Load(), late.Load(), time.Since(start).Seconds())
}

// source is the i-th source address: 127.1.0.0 + i, skipping .0 and .255.
func source(i int) net.IP {
	n := i/254*256 + i%254 + 1
	return net.IPv4(127, byte(1+n>>16), byte(n>>8), byte(n))
}

var errTimeout = errors.New("no final answer within 8 s")

// call makes one call from src: INVITE, ACK, BYE.
func call(dst *net.UDPAddr, src net.IP, id int, buf []byte) error {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: src})
	if err != nil {
		return err
	}
	defer c.Close()
	local := c.LocalAddr().String()
	callID := fmt.Sprintf("soak-%d-%d@%s", id, time.Now().UnixNano(), src)
	from := fmt.Sprintf("<sip:caller%d@%s>;tag=f%d", id, src, id)
	to := "<sip:service@" + dst.String() + ">"
	invite := fmt.Sprintf("INVITE sip:service@%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bK-%d-inv;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 1 INVITE\r\n"+
		"Contact: <sip:caller%d@%s>\r\nContent-Length: 0\r\n\r\n", dst, local, id, from, to, callID, id, local)
	res, err := transact(c, dst, []byte(invite), "INVITE", buf)
	if err != nil {
		return fmt.Errorf("INVITE: %w", err)
	}
	if res.status != 200 {
		return fmt.Errorf("INVITE: %d", res.status)
	}
	target := res.contact
	if target == "" {
		return fmt.Errorf("INVITE: 200 without Contact")
	}
	var route strings.Builder
	for i := len(res.recordRoute) - 1; i >= 0; i-- {
		route.WriteString("Route: " + res.recordRoute[i] + "\r\n")
	}
	toTagged := res.to
	inDialog := func(method string, seq int, branch string) []byte {
		return fmt.Appendf(nil, "%s %s SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %s;branch=z9hG4bK-%d-%s;rport\r\n"+
			"%sMax-Forwards: 70\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nContent-Length: 0\r\n\r\n",
			method, target, local, id, branch, route.String(), from, toTagged, callID, seq, method)
	}
	if _, err := c.WriteToUDP(inDialog("ACK", 1, "ack"), dst); err != nil {
		return fmt.Errorf("ACK: %w", err)
	}
	res, err = transact(c, dst, inDialog("BYE", 2, "bye"), "BYE", buf)
	if err != nil {
		return fmt.Errorf("BYE: %w", err)
	}
	if res.status != 200 {
		return fmt.Errorf("BYE: %d", res.status)
	}
	return nil
}

// answer is what a call needs of a final response.
type answer struct {
	status           int
	to, contact      string
	recordRoute      []string
	cseqMethod, line string
}

// transact sends req until a final response to method comes, for 8 s.
func transact(c *net.UDPConn, dst *net.UDPAddr, req []byte, method string, buf []byte) (answer, error) {
	deadline := time.Now().Add(8 * time.Second)
	for {
		if _, err := c.WriteToUDP(req, dst); err != nil {
			return answer{}, err
		}
		resend := time.Now().Add(500 * time.Millisecond)
		if resend.After(deadline) {
			resend = deadline
		}
		_ = c.SetReadDeadline(resend)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return answer{}, err
			}
			a := parse(buf[:n])
			if a.status >= 200 && a.cseqMethod == method {
				return a, nil
			}
		}
		if !time.Now().Before(deadline) {
			return answer{}, errTimeout
		}
	}
}

func parse(b []byte) answer {
	var a answer
	head, _, _ := bytes.Cut(b, []byte("\r\n\r\n"))
	for i, line := range strings.Split(string(head), "\r\n") {
		if i == 0 {
			if strings.HasPrefix(line, "SIP/2.0 ") && len(line) >= 11 {
				fmt.Sscanf(line[8:11], "%d", &a.status)
			}
			a.line = line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "to", "t":
			a.to = value
		case "contact", "m":
			if l, r := strings.IndexByte(value, '<'), strings.IndexByte(value, '>'); l >= 0 && r > l {
				a.contact = value[l+1 : r]
			} else {
				a.contact = value
			}
		case "record-route":
			a.recordRoute = append(a.recordRoute, value)
		case "cseq":
			if _, m, ok := strings.Cut(value, " "); ok {
				a.cseqMethod = strings.TrimSpace(m)
			}
		}
	}
	return a
}
