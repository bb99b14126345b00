package sip

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"clb/accesslog"
	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
	"clb/policy"
)

// discard is a sender that drops what it is given: the benchmarks measure
// the proxy, not the kernel.
type discard struct{ recorder }

func (*discard) send(destination, []byte) error { return nil }

// callMessages are the six messages of one SIPp call through clb, as clb
// receives them: INVITE from the UAC; 180 and 200 from the UAS; ACK and BYE
// from the UAC along the route set; the UAS's 200 to the BYE.
func callMessages(i int, clb, uac, uas netip.AddrPort, key string) [][]byte {
	callID := fmt.Sprintf("%d-4242@127.0.0.1", i)
	tag := fmt.Sprintf("4242SIPpTag00%d", i)
	via := fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK-4242-%d-0\r\n", uac, i)
	clbVia := fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=%s1abc%d\r\n", clb, branchPrefix, i)
	rr := fmt.Sprintf("Record-Route: <sip:%s;transport=udp;lr;bekey=%s;beroute=inst1;ftag=%s>\r\n", clb, policy.EscapeKey(key), tag)
	route := strings.Replace(rr, "Record-Route", "Route", 1)
	from := fmt.Sprintf("From: sipp <sip:sipp@%s>;tag=%s\r\n", uac, tag)
	to := fmt.Sprintf("To: service <sip:service@%s>", clb)
	sdp := "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
	common := func(cseq string) string {
		return fmt.Sprintf("Call-ID: %s\r\nCSeq: %s\r\n", callID, cseq)
	}
	return [][]byte{
		[]byte(fmt.Sprintf("INVITE sip:service@%s SIP/2.0\r\n%s%s%s\r\n%sContact: <sip:sipp@%s;transport=UDP>\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
			clb, via, from, to, common("1 INVITE"), uac, len(sdp), sdp)),
		[]byte(fmt.Sprintf("SIP/2.0 180 Ringing\r\n%s%s%s%s%s;tag=uas%d\r\n%sContact: <sip:%s;transport=UDP>\r\nContent-Length: 0\r\n\r\n",
			clbVia, strings.Replace(via, "Via", "Via", 1), rr, from, to, i, common("1 INVITE"), uas)),
		[]byte(fmt.Sprintf("SIP/2.0 200 OK\r\n%s%s%s%s%s;tag=uas%d\r\n%sContact: <sip:%s;transport=UDP>\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
			clbVia, via, rr, from, to, i, common("1 INVITE"), uas, len(sdp), sdp)),
		[]byte(fmt.Sprintf("ACK sip:%s;transport=UDP SIP/2.0\r\n%s%s%s%s;tag=uas%d\r\n%sContact: <sip:sipp@%s;transport=UDP>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			uas, via, route, from, to, i, common("1 ACK"), uac)),
		[]byte(fmt.Sprintf("BYE sip:%s;transport=UDP SIP/2.0\r\n%s%s%s%s;tag=uas%d\r\n%sContact: <sip:sipp@%s;transport=UDP>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			uas, via, route, from, to, i, common("2 BYE"), uac)),
		[]byte(fmt.Sprintf("SIP/2.0 200 OK\r\n%s%s%s%s;tag=uas%d\r\n%sContact: <sip:%s;transport=UDP>\r\nContent-Length: 0\r\n\r\n",
			clbVia, via, from, to, i, common("2 BYE"), uas)),
	}
}

// BenchmarkCall is the proxy's work for one call (six messages), without the
// sockets.
func BenchmarkCall(b *testing.B) { benchmarkCall(b, nil) }

// BenchmarkCallAccessLog is BenchmarkCall with the access log on: JSON lines
// for the three requests of each call, to a discarding writer (every key,
// then one in a hundred).
func BenchmarkCallAccessLog(b *testing.B) {
	for _, sample := range []float64{1, 0.01} {
		b.Run(fmt.Sprintf("sample=%v", sample), func(b *testing.B) {
			log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))
			access := accesslog.New(log)
			access.Set(true, sample)
			benchmarkCall(b, access)
		})
	}
}

func benchmarkCall(b *testing.B, access *accesslog.Log) {
	call := callProxy(b, access, 1024)
	var sc scratch
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		call(i, &sc)
	}
}

// udpInstances are three UDP instances on 127.0.0.1:5071-5073 (nothing
// listens: the proxies that use them send to a recorder or a discard) and
// their balancer.
func udpInstances(tb testing.TB) ([]config.Instance, *balancer.Balancer) {
	var in []config.Instance
	for i := range 3 {
		in = append(in, config.Instance{Name: fmt.Sprintf("inst%d", i+1), Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{
			Transport: "udp", Host: "127.0.0.1", Port: 5071 + i}}})
	}
	bal, err := balancer.New(in, loadfactor.DefaultParams())
	if err != nil {
		tb.Fatal(err)
	}
	return in, bal
}

// callProxy is a proxy before three UDP instances, and a function that has
// it handle the six messages of call i (callMessages; one of n calls,
// i modulo n).
func callProxy(tb testing.TB, access *accesslog.Log, n int) func(i int, sc *scratch) {
	clb := netip.MustParseAddrPort("127.0.0.1:5060")
	uac := netip.MustParseAddrPort("127.0.0.1:5061")
	uasAddr := netip.MustParseAddrPort("127.0.0.1:5071")
	in, bal := udpInstances(tb)
	p := newProxy(ProxyOptions{Balancer: bal, Instances: in, Access: access}, &discard{})
	msgs := make([][][]byte, n)
	for i := range msgs {
		msgs[i] = callMessages(i, clb, uac, uasAddr, fmt.Sprintf("4242SIPpTag00%d%d-4242@127.0.0.1", i, i))
	}
	local := endpoint{"udp", clb}
	return func(i int, sc *scratch) {
		for j, m := range msgs[i%n] {
			src := uac
			if j == 1 || j == 2 || j == 5 {
				src = uasAddr
			}
			p.handle(&inbound{data: m, local: local, src: src}, sc)
		}
	}
}

// BenchmarkFloodRefused is the proxy's work for one request of a source
// over its SIP rate: what a flood costs the reader (answered 503).
func BenchmarkFloodRefused(b *testing.B) {
	clb := netip.MustParseAddrPort("127.0.0.1:5060")
	in := []config.Instance{{Name: "inst1", Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{
		Transport: "udp", Host: "127.0.0.2", Port: 5071}}}}
	bal, err := balancer.New(in, loadfactor.DefaultParams())
	if err != nil {
		b.Fatal(err)
	}
	p := newProxy(ProxyOptions{Balancer: bal, Instances: in,
		Limits: config.Limits{SIP: config.SIPLimits{Rate: 1, Burst: 1}}}, &discard{})
	flooder := netip.MustParseAddrPort("198.51.100.7:5060")
	msg := []byte("OPTIONS sip:service@127.0.0.1:5060 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-flood-1;rport\r\n" +
		"From: <sip:scan@198.51.100.7>;tag=f1\r\nTo: <sip:service@127.0.0.1>\r\n" +
		"Call-ID: flood-1@198.51.100.7\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n" +
		"User-Agent: some phone\r\nContent-Length: 0\r\n\r\n")
	local := endpoint{"udp", clb}
	var sc scratch
	p.handle(&inbound{data: msg, local: local, src: flooder}, &sc) // the burst's one
	b.ReportAllocs()
	for b.Loop() {
		p.handle(&inbound{data: msg, local: local, src: flooder}, &sc)
	}
}

// BenchmarkServerUDP is the whole UDP path on loopback sockets: a client
// sends responses through clb in windows of 16 (clb's Via on top, the
// client's next), clb reads, relays and sends them back to the client. Per
// message, it counts clb's system calls and the client's (one sendto and
// one recvfrom a message, the same in every variant).
func BenchmarkServerUDP(b *testing.B) {
	for _, readers := range []int{1, 2} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			srv := benchServer(b, "udp", readers)
			client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			clb, uac := srv.transport("udp").selves()[0].addr, localAddr(client.LocalAddr())
			const window = 16
			msgs := make([][]byte, window)
			for i := range msgs {
				msgs[i] = callMessages(i, clb, uac, uac, "k")[5]
			}
			buf := make([]byte, maxMessage)
			b.ResetTimer()
			for b.Loop() {
				for _, m := range msgs {
					if _, err := client.WriteToUDPAddrPort(m, clb); err != nil {
						b.Fatal(err)
					}
				}
				for range msgs {
					if err := client.SetReadDeadline(time.Now().Add(wait)); err != nil {
						b.Fatal(err)
					}
					if _, _, err := client.ReadFromUDPAddrPort(buf); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*window), "ns/message")
		})
	}
}

// BenchmarkServerTCP is the whole TCP path on a loopback connection: a
// client sends responses through clb in windows of 16, each with clb's
// Via on top naming the client's connection (clb-src) and the client's
// next, and clb relays them back on that connection.
func BenchmarkServerTCP(b *testing.B) {
	srv := benchServer(b, "tcp", 1)
	clb := srv.transport("tcp").selves()[0].addr
	client, err := net.Dial("tcp", clb.String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	uac := localAddr(client.LocalAddr())
	const window = 16
	var out []byte
	relayed := 0
	for i := range window {
		m := string(callMessages(i, clb, uac, uac, "k")[5])
		m = strings.Replace(m, "Via: SIP/2.0/UDP", "Via: SIP/2.0/TCP", 2)
		clbVia := m[strings.Index(m, "\r\n")+2:]
		clbVia = clbVia[:strings.Index(clbVia, "\r\n")]
		m = strings.Replace(m, clbVia, clbVia+";"+paramSource+"=tcp%2F"+policy.EscapeKey(uac.String()), 1)
		out = append(out, m...)
		relayed += len(m) - len(clbVia) - len(";"+paramSource+"=tcp%2F"+policy.EscapeKey(uac.String())) - 2
	}
	buf := make([]byte, relayed)
	b.ResetTimer()
	for b.Loop() {
		if err := client.SetDeadline(time.Now().Add(wait)); err != nil {
			b.Fatal(err)
		}
		if _, err := client.Write(out); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*window), "ns/message")
}

// benchServer is a serving clb with one listener of transport on loopback,
// stopped when the benchmark ends.
func benchServer(b *testing.B, transport string, readers int) *Server {
	srv, err := NewServer(ServerOptions{Readers: readers,
		Listen: []config.SIPAddr{{Endpoint: config.Endpoint{Transport: transport, Host: "127.0.0.1"}}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return srv
}
