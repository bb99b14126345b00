//go:build linux

// Command floodtools holds the load generators of bench/flood.sh, the proof
// of clb's flood control (SPEC section 12): each binds the source address it
// is told, so that one machine's loopback plays several clients. It is a
// benchmark tool, not part of clb and not a test; Linux only, as the
// benches are (raw sockets with SOCK_CLOEXEC).
//
//	floodtools sipflood -src 127.0.0.1 -dst 127.0.0.1:25060 -rate 20000 -d 30s
//	floodtools spoof    -dst 127.0.0.1:25060 -n 1000000 -d 30s
//	floodtools http     -src 127.0.0.3 -addr 127.0.0.1:28080 -rate 500 -c 8 -d 30s
//	floodtools conncap  -src 127.0.0.4 -addr 127.0.0.1:28080 -n 300
//
// Each prints one line of key=value counts when done.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: floodtools sipflood|spoof|http|conncap [flags]")
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{"sipflood": sipFlood, "spoof": spoof, "http": httpLoad, "conncap": connCap}
	run, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "floodtools: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "floodtools "+os.Args[1]+":", err)
		os.Exit(1)
	}
}

// pace calls send(n) with the number of requests due at rate since start,
// until d has passed, waking when the next one is due but at most once a
// millisecond (so a fast rate goes in batches); it does not catch up more
// than maxLag of lag (a stalled generator must not burst).
func pace(rate float64, d, maxLag time.Duration, send func(n int) bool) {
	start := time.Now()
	done := 0.0
	for {
		el := time.Since(start)
		if el >= d {
			return
		}
		due := el.Seconds() * rate
		if lag := max(1, rate*maxLag.Seconds()); due-done > lag {
			done = due - lag
		}
		if n := int(due - done); n > 0 {
			if !send(n) {
				return
			}
			done += float64(n)
		}
		next := time.Duration((done + 1 - due) / rate * float64(time.Second))
		time.Sleep(max(time.Millisecond, next))
	}
}

func options(via netip.AddrPort, dst string, branch string) []byte {
	return fmt.Appendf(nil, "OPTIONS sip:ping@%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bK%s\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:flood@%s>;tag=%s\r\n"+
		"To: <sip:ping@%s>\r\n"+
		"Call-ID: %s@flood\r\n"+
		"CSeq: 1 OPTIONS\r\n"+
		"Content-Length: 0\r\n\r\n", dst, via, branch, via.Addr(), branch, dst, branch)
}

// batch is how many datagrams a generator hands the kernel a system call
// (sendmmsg, recvmmsg): a generator shares the cores with clb, so it must
// cost little per datagram.
const batch = 64

// sipFlood sends OPTIONS at a rate from one source and counts the answers
// by status, and the 503s that carry Retry-After. The datagrams are built
// before the clock starts (distinct branches and Call-IDs, reused round
// robin) and sent in batches.
func sipFlood(args []string) error {
	fs := flag.NewFlagSet("sipflood", flag.ExitOnError)
	src := fs.String("src", "127.0.0.1", "source address")
	dst := fs.String("dst", "127.0.0.1:5060", "clb's SIP address")
	rate := fs.Float64("rate", 20000, "requests per second")
	d := fs.Duration("d", 30*time.Second, "duration")
	fs.Parse(args)
	raddr, err := net.ResolveUDPAddr("udp4", *dst)
	if err != nil {
		return err
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(*src)})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	pc := ipv4.NewPacketConn(c)
	self := c.LocalAddr().(*net.UDPAddr).AddrPort()
	msgs := make([][]byte, 4096)
	for i := range msgs {
		msgs[i] = options(self, *dst, "f"+strconv.Itoa(i))
	}

	var mu sync.Mutex
	byStatus := map[string]int{}
	retryAfter := 0
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		ms := make([]ipv4.Message, batch)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		for {
			n, err := pc.ReadBatch(ms, 0)
			if err != nil {
				return
			}
			mu.Lock()
			for _, m := range ms[:n] {
				b := m.Buffers[0][:m.N]
				status := "other"
				if bytes.HasPrefix(b, []byte("SIP/2.0 ")) && len(b) >= 11 {
					status = string(b[8:11])
				}
				byStatus[status]++
				if status == "503" && hasField(b, "retry-after") {
					retryAfter++
				}
			}
			mu.Unlock()
		}
	}()
	sent, errs := 0, 0
	ms := make([]ipv4.Message, batch)
	start := time.Now()
	pace(*rate, *d, 100*time.Millisecond, func(n int) bool {
		for n > 0 {
			k := min(n, batch)
			for j := range k {
				ms[j] = ipv4.Message{Buffers: [][]byte{msgs[(sent+j)%len(msgs)]}, Addr: raddr}
			}
			w, err := pc.WriteBatch(ms[:k], 0)
			if err != nil || w <= 0 {
				errs++ // the one it stopped at; the rest go in the next call
				w = 1
			}
			sent += w
			n -= w
		}
		return true
	})
	el := time.Since(start)
	time.Sleep(time.Second) // the last answers
	c.SetReadDeadline(time.Now())
	<-readDone
	mu.Lock()
	defer mu.Unlock()
	fmt.Printf("sent=%d send_errors=%d rate=%.0f/s answers=%s retry_after_503=%d %s\n",
		sent-errs, errs, float64(sent-errs)/el.Seconds(), counts(byStatus), retryAfter, cpu())
	return nil
}

// hasField reports whether message m has a header field of the lower-case
// name (case-insensitively, at the start of a line).
func hasField(m []byte, name string) bool {
	for line := range bytes.SplitSeq(m, []byte("\r\n")) {
		if len(line) == 0 {
			return false // the end of the head
		}
		k, _, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			return true
		}
	}
	return false
}

// spoof sends one OPTIONS from each of n source addresses, 127.1.0.0
// upwards, at rate (0: as fast as it can), stopping at d. With -raw (the
// default) each datagram is written whole, IP header and all, on one raw
// socket (root only), a batch of them a system call (sendmmsg); without it
// each source is a UDP socket bound to its address (socket, bind, send,
// close), which takes a core here at some 30,000 sources a second.
func spoof(args []string) error {
	fs := flag.NewFlagSet("spoof", flag.ExitOnError)
	dst := fs.String("dst", "127.0.0.1:5060", "clb's SIP address")
	n := fs.Int("n", 1_000_000, "source addresses")
	rate := fs.Float64("rate", 0, "sources per second; 0: as fast as it can")
	d := fs.Duration("d", 30*time.Second, "at most this long")
	port := fs.Int("port", 15999, "source port on each address")
	raw := fs.Bool("raw", true, "send on a raw socket instead of binding each address")
	fs.Parse(args)
	ap, err := netip.ParseAddrPort(*dst)
	if err != nil {
		return err
	}
	to := &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	addr := func(i int) [4]byte {
		v := uint32(127)<<24 | 1<<16 + uint32(i)
		return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	}
	msg := func(i int) []byte {
		return options(netip.AddrPortFrom(netip.AddrFrom4(addr(i)), uint16(*port)), *dst, "s"+strconv.Itoa(i))
	}
	// sendN sends sources [from, from+k) and says how many went.
	sendN := func(from, k int) (int, error) {
		for j := range k {
			if err := sendFrom(addr(from+j), *port, msg(from+j), to); err != nil {
				return j, err
			}
		}
		return k, nil
	}
	if *raw {
		// IPPROTO_RAW: the datagrams carry their own IP header.
		c, err := net.ListenPacket("ip4:255", "127.0.0.1")
		if err != nil {
			return fmt.Errorf("raw socket (root only; -raw=false binds each address instead): %w", err)
		}
		defer c.Close()
		if rc, ok := c.(*net.IPConn); ok {
			_ = rc.SetWriteBuffer(4 << 20)
		}
		pc := ipv4.NewPacketConn(c)
		slab := make([]byte, batch*1500)
		ms := make([]ipv4.Message, batch)
		dstIP := &net.IPAddr{IP: ap.Addr().AsSlice()}
		sendN = func(from, k int) (int, error) {
			k = min(k, batch)
			for j := range k {
				b := udpPacket(slab[j*1500:j*1500], addr(from+j), *port, ap, msg(from+j))
				ms[j] = ipv4.Message{Buffers: [][]byte{b}, Addr: dstIP}
			}
			for {
				w, err := pc.WriteBatch(ms[:k], 0)
				if w > 0 || !errors.Is(err, syscall.ENOBUFS) {
					return max(w, 0), err
				}
				time.Sleep(100 * time.Microsecond) // no buffer: wait, do not lose it
			}
		}
	}
	sent, errs := 0, 0
	// some sends as many of k more sources as it can; false when all n went
	some := func(k int) bool {
		for k > 0 {
			if sent+errs >= *n {
				return false
			}
			w, err := sendN(sent+errs, min(k, *n-sent-errs))
			sent += w
			k -= w
			if err != nil {
				errs++
				k--
			}
		}
		return true
	}
	start := time.Now()
	if *rate > 0 {
		pace(*rate, *d, *d, some) // a count to reach: catch up
	} else {
		for deadline := start.Add(*d); time.Now().Before(deadline) && some(batch); {
		}
	}
	el := time.Since(start)
	fmt.Printf("sources=%d errors=%d seconds=%.1f rate=%.0f/s %s\n", sent, errs, el.Seconds(), float64(sent)/el.Seconds(), cpu())
	return nil
}

// udpPacket appends an IPv4 datagram from src:port to dst carrying msg; the
// kernel fills in the IP checksum and total length, and a UDP checksum of 0
// means none.
func udpPacket(b []byte, src [4]byte, port int, dst netip.AddrPort, msg []byte) []byte {
	ulen := 8 + len(msg)
	d := dst.Addr().As4()
	b = append(b, 0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, syscall.IPPROTO_UDP, 0, 0)
	b = append(b, src[:]...)
	b = append(b, d[:]...)
	b = append(b, byte(port>>8), byte(port), byte(dst.Port()>>8), byte(dst.Port()), byte(ulen>>8), byte(ulen), 0, 0)
	return append(b, msg...)
}

// sendFrom sends msg to "to" from a UDP socket bound to a:port for it.
func sendFrom(a [4]byte, port int, msg []byte, to syscall.Sockaddr) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: a}); err != nil {
		return err
	}
	return syscall.Sendto(fd, msg, 0, to)
}

// httpLoad sends GETs with the CLBKEY cookie of one of -sessions sessions
// from one source address over -c connections, keep-alive, reconnecting
// when the server closes, and counts the answers by status. A connection
// waits for each answer before its next request, unless it has fallen
// behind its rate: then it sends up to -window requests at once.
func httpLoad(args []string) error {
	fs := flag.NewFlagSet("http", flag.ExitOnError)
	src := fs.String("src", "127.0.0.3", "source address")
	addr := fs.String("addr", "127.0.0.1:8080", "clb's HTTP address")
	rate := fs.Float64("rate", 500, "requests per second, all connections together")
	conns := fs.Int("c", 8, "connections")
	sessions := fs.Int("sessions", 10000, "distinct CLBKEY cookies")
	window := fs.Int("window", 1, "at most this many requests sent on a connection before their answers (pipelined) when it is behind its rate")
	d := fs.Duration("d", 30*time.Second, "duration")
	fs.Parse(args)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(*src)}, Timeout: 2 * time.Second}
	var mu sync.Mutex
	total := map[string]int{}
	retryAfter429, dials := 0, 0
	var wg sync.WaitGroup
	start := time.Now()
	for w := range *conns {
		wg.Go(func() {
			by := map[string]int{}
			ra, nd := 0, 0
			var c net.Conn
			var br *bufio.Reader
			i := w
			var reqs []byte
			pace(*rate/float64(*conns), *d, 100*time.Millisecond, func(n int) bool {
				for n > 0 {
					if c == nil {
						var err error
						nd++
						if c, err = dialer.Dial("tcp4", *addr); err != nil {
							by["dial_error"]++
							c = nil
							n--
							continue
						}
						br = bufio.NewReaderSize(c, 4096)
					}
					// Behind its rate a connection sends the requests due
					// at once (up to -window, pipelined), then reads their
					// answers; on time, one request and its answer.
					k := min(n, *window)
					n -= k
					reqs = reqs[:0]
					for range k {
						i += *conns
						reqs = fmt.Appendf(reqs, "GET / HTTP/1.1\r\nHost: clb\r\nCookie: CLBKEY=session%d\r\n\r\n", i%*sessions)
					}
					c.SetDeadline(time.Now().Add(5 * time.Second))
					_, err := c.Write(reqs)
					for j := 0; j < k; j++ {
						var status string
						var hasRA, closed bool
						if err == nil {
							status, hasRA, closed, err = readAnswer(br)
						}
						if err != nil {
							by[errKind(err)] += k - j // this one and those after it
							break
						}
						by[status]++
						if status == "429" && hasRA {
							ra++
						}
						if closed {
							if j < k-1 {
								by["closed"] += k - 1 - j // sent, never answered
							}
							err = io.EOF
							break
						}
					}
					if err != nil {
						c.Close()
						c = nil
					}
				}
				return true
			})
			if c != nil {
				c.Close()
			}
			mu.Lock()
			for k, v := range by {
				total[k] += v
			}
			retryAfter429 += ra
			dials += nd
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start)
	n := 0
	for _, v := range total {
		n += v
	}
	fmt.Printf("requests=%d rate=%.0f/s connections=%d answers=%s retry_after_429=%d ok=%d %s\n",
		n, float64(n)/el.Seconds(), dials, counts(total), retryAfter429, total["200"], cpu())
	return nil
}

// readAnswer reads one answer: its status, whether it has Retry-After, and
// whether the server closes the connection after it.
func readAnswer(br *bufio.Reader) (status string, retryAfter, closed bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return "", false, true, fmt.Errorf("bad status line %q", line)
	}
	status = string(line[9:12])
	length := 0
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return status, retryAfter, true, err
		}
		if len(bytes.TrimSpace(h)) == 0 {
			break
		}
		k, v, _ := bytes.Cut(h, []byte(":"))
		v = bytes.TrimSpace(v)
		switch strings.ToLower(string(k)) {
		case "content-length":
			length, _ = strconv.Atoi(string(v))
		case "connection":
			closed = closed || bytes.EqualFold(v, []byte("close"))
		case "retry-after":
			retryAfter = true
		}
	}
	_, err = br.Discard(length)
	return status, retryAfter, closed, err
}

func errKind(err error) string {
	switch {
	case err == io.EOF || strings.Contains(err.Error(), "reset"):
		return "closed"
	case strings.Contains(err.Error(), "timeout"):
		return "timeout"
	}
	return "error"
}

// connCap opens n connections from one source at once and holds them: past
// limits.http.connections clb must close the new ones at once (SPEC 12).
// It reports how many were still open after a second and how many closed.
func connCap(args []string) error {
	fs := flag.NewFlagSet("conncap", flag.ExitOnError)
	src := fs.String("src", "127.0.0.4", "source address")
	addr := fs.String("addr", "127.0.0.1:8080", "clb's HTTP address")
	n := fs.Int("n", 300, "connections")
	fs.Parse(args)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(*src)}, Timeout: 2 * time.Second}
	var cs []net.Conn
	dialErrs := 0
	for range *n {
		c, err := dialer.Dial("tcp4", *addr)
		if err != nil {
			dialErrs++
			continue
		}
		cs = append(cs, c)
	}
	time.Sleep(time.Second)
	open, closed := 0, 0
	buf := make([]byte, 1)
	for _, c := range cs {
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := c.Read(buf); err != nil && strings.Contains(err.Error(), "timeout") {
			open++
		} else {
			closed++
		}
		c.Close()
	}
	fmt.Printf("opened=%d dial_errors=%d held=%d closed_at_once=%d\n", len(cs), dialErrs, open, closed)
	return nil
}

// cpu is the CPU time this process has used (user + system), for each
// tool's line: the generators share the cores with clb, so what they cost
// is part of the proof.
func cpu() string {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return "cpu=unknown"
	}
	return fmt.Sprintf("cpu=%.2fs", time.Duration(ru.Utime.Nano()+ru.Stime.Nano()).Seconds())
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d", k, m[k])
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}
