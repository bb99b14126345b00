package membership

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// SRVRecord is one SRV record (RFC 2782).
type SRVRecord struct {
	// Target is the host name, lower case, without the final dot; "." (the
	// service is not offered there) is "".
	Target                 string
	Port, Priority, Weight uint16
}

// SRVAnswer is a server's answer about one SRV name.
type SRVAnswer struct {
	// Records are as the server gave them; none for a name that does not
	// exist (NXDOMAIN) or has no SRV record.
	Records []SRVRecord
	// TTL is the shortest time to live of the records; zero without any.
	TTL time.Duration
}

// SRVLookup finds a name's SRV records. An error is a look-up that gave no
// answer (timeout, server failure, refusal): a name that has no records is
// an answer, not an error.
type SRVLookup interface {
	LookupSRV(ctx context.Context, name string) (SRVAnswer, error)
}

var _ SRVLookup = DNSClient{}

// DNSClient asks DNS servers itself, rather than through net.Resolver,
// whose LookupSRV hides the records' TTL and shuffles them. It asks over
// UDP and again over TCP when the answer is truncated; each server in turn
// until one answers. Names are absolute (no search list).
type DNSClient struct {
	// Servers are asked in order. None: those of /etc/resolv.conf.
	Servers []netip.AddrPort
}

// LookupSRV asks for name's SRV records; ctx bounds the whole look-up.
func (c DNSClient) LookupSRV(ctx context.Context, name string) (SRVAnswer, error) {
	servers := c.Servers
	if len(servers) == 0 {
		f, err := os.Open("/etc/resolv.conf")
		if err == nil {
			servers = ResolvConfServers(f)
			f.Close()
		}
		if len(servers) == 0 { // as Go's resolver does without a file
			servers = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53"), netip.MustParseAddrPort("[::1]:53")}
		}
	}
	var errs []error
	for _, server := range servers {
		ans, err := querySRV(ctx, server, name)
		if err == nil {
			return ans, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return SRVAnswer{}, errors.Join(errs...)
}

// ResolvConfServers are the nameserver lines of a resolv.conf(5), port 53.
func ResolvConfServers(r io.Reader) []netip.AddrPort {
	var out []netip.AddrPort
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil {
			out = append(out, netip.AddrPortFrom(a.Unmap(), 53))
		}
	}
	return out
}

// maxUDP is the answer size clb offers to take over UDP (EDNS0): the size
// DNS Flag Day 2020 settled on, which no path fragments.
const maxUDP = 1232

func querySRV(ctx context.Context, server netip.AddrPort, name string) (SRVAnswer, error) {
	fqdn := strings.TrimSuffix(name, ".") + "."
	q, err := dnsmessage.NewName(fqdn)
	if err != nil {
		return SRVAnswer{}, fmt.Errorf("SRV %s: %w", name, err)
	}
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	question := dnsmessage.Question{Name: q, Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET}
	b := dnsmessage.NewBuilder(make([]byte, 2, 512), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(question)
	_ = b.StartAdditionals()
	var opt dnsmessage.ResourceHeader
	_ = opt.SetEDNS0(maxUDP, dnsmessage.RCodeSuccess, false)
	_ = b.OPTResource(opt, dnsmessage.OPTResource{})
	msg, err := b.Finish()
	if err != nil {
		return SRVAnswer{}, fmt.Errorf("SRV %s: %w", name, err)
	}
	binary.BigEndian.PutUint16(msg, uint16(len(msg)-2)) // TCP's length prefix
	resp, err := exchange(ctx, "udp", server, msg[2:])
	if err == nil {
		var h dnsmessage.Header
		if h, err = peekHeader(resp); err == nil && h.Truncated {
			resp, err = exchange(ctx, "tcp", server, msg)
		}
	}
	if err != nil {
		return SRVAnswer{}, fmt.Errorf("SRV %s from %s: %w", name, server, err)
	}
	ans, err := parseSRV(resp, id, question)
	if err != nil {
		return SRVAnswer{}, fmt.Errorf("SRV %s from %s: %w", name, server, err)
	}
	return ans, nil
}

func peekHeader(resp []byte) (dnsmessage.Header, error) {
	var p dnsmessage.Parser
	return p.Start(resp)
}

// exchange sends msg and reads one answer, within ctx's deadline. Over TCP
// msg carries its length prefix, and so does the answer read.
func exchange(ctx context.Context, network string, server netip.AddrPort, msg []byte) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, server.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(msg); err != nil {
		return nil, err
	}
	if network == "udp" {
		return readUDP(ctx, conn, msg)
	}
	var l [2]byte
	if _, err := io.ReadFull(conn, l[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// udpResend is how long a UDP question waits for its answer before it is
// sent again, doubling each time, within the look-up's deadline: a
// datagram lost either way (a server restarting, a forwarder's upstream
// gone mid-question) costs that, not the whole look-up.
const udpResend = 500 * time.Millisecond

// readUDP reads the answer to msg, sent on conn, sending msg again while
// none comes.
func readUDP(ctx context.Context, conn net.Conn, msg []byte) ([]byte, error) {
	buf := make([]byte, maxUDP)
	dl, bounded := ctx.Deadline()
	for wait := udpResend; ; wait *= 2 {
		next := time.Now().Add(wait)
		if bounded && dl.Before(next) {
			next = dl
		}
		_ = conn.SetReadDeadline(next)
		if err := ctx.Err(); err != nil { // ended before the deadline was set
			return nil, err
		}
		n, err := conn.Read(buf)
		if err == nil {
			return buf[:n], nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil || next.Equal(dl) {
			return nil, err
		}
		if _, err := conn.Write(msg); err != nil {
			return nil, err
		}
	}
}

// parseSRV reads the answer to question: its SRV records for the name
// asked, and their shortest TTL. NXDOMAIN is an answer without records;
// any other failure code is an error.
func parseSRV(resp []byte, id uint16, question dnsmessage.Question) (SRVAnswer, error) {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return SRVAnswer{}, fmt.Errorf("malformed answer: %w", err)
	}
	if h.ID != id || !h.Response {
		return SRVAnswer{}, errors.New("answer to another question")
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 || qs[0].Type != question.Type ||
		!strings.EqualFold(qs[0].Name.String(), question.Name.String()) {
		return SRVAnswer{}, errors.New("answer to another question")
	}
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return SRVAnswer{}, nil
	default:
		return SRVAnswer{}, fmt.Errorf("server answered %s", strings.TrimPrefix(h.RCode.String(), "RCode"))
	}
	var ans SRVAnswer
	// The name asked, and those it is an alias of (CNAME records, which a
	// server puts before the records they lead to).
	names := []string{strings.ToLower(question.Name.String())}
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return SRVAnswer{}, fmt.Errorf("malformed answer: %w", err)
		}
		owner := slices.Contains(names, strings.ToLower(rh.Name.String()))
		if rh.Type == dnsmessage.TypeCNAME && owner && len(names) < 8 {
			r, err := p.CNAMEResource()
			if err != nil {
				return SRVAnswer{}, fmt.Errorf("malformed CNAME record: %w", err)
			}
			names = append(names, strings.ToLower(r.CNAME.String()))
			continue
		}
		if rh.Type != dnsmessage.TypeSRV || !owner {
			if err := p.SkipAnswer(); err != nil {
				return SRVAnswer{}, fmt.Errorf("malformed answer: %w", err)
			}
			continue
		}
		r, err := p.SRVResource()
		if err != nil {
			return SRVAnswer{}, fmt.Errorf("malformed SRV record: %w", err)
		}
		target := strings.ToLower(strings.TrimSuffix(r.Target.String(), "."))
		ans.Records = append(ans.Records, SRVRecord{Target: target, Port: r.Port, Priority: r.Priority, Weight: r.Weight})
		ttl := time.Duration(rh.TTL) * time.Second
		if len(ans.Records) == 1 || ttl < ans.TTL {
			ans.TTL = ttl
		}
	}
	return ans, nil
}
