package sip

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	gosip "github.com/emiago/sipgo/sip"
)

// corpusOutcomes is what clb does with each torture message of RFC 4475 and
// RFC 5118, after their MANIFESTs: "forward" to an instance, a status code
// clb answers with, or "drop". Where a MANIFEST allows either, so does this.
// (The two VALID responses are not responses to anything clb sent: a
// stateless proxy drops them after parsing.)
var corpusOutcomes = map[string]string{
	"wsinv.dat": "forward", "intmeth.dat": "forward", "esc01.dat": "forward", "escnull.dat": "forward",
	"esc02.dat": "forward", "lwsdisp.dat": "forward", "longreq.dat": "forward", "dblreq.dat": "forward",
	"semiuri.dat": "forward", "transports.dat": "forward", "mpart01.dat": "forward",
	"unreason.dat": "drop", "noreason.dat": "drop",
	"badinv01.dat": "400", "clerr.dat": "400", "ncl.dat": "400", "scalar02.dat": "400", "scalarlg.dat": "drop",
	"quotbal.dat": "400", "ltgtruri.dat": "400", "lwsruri.dat": "400", "lwsstart.dat": "400", "trws.dat": "400",
	"escruri.dat": "400", "baddate.dat": "forward|400", "regbadct.dat": "forward|400", "badaspec.dat": "400",
	"baddn.dat": "400", "badvers.dat": "505", "mismatch01.dat": "400", "mismatch02.dat": "400", "bigcode.dat": "drop",
	"badbranch.dat": "forward|400", "insuf.dat": "400", "unkscm.dat": "416", "novelsc.dat": "416|404",
	"unksm2.dat": "forward", "bext01.dat": "420", "invut.dat": "forward", "regaut01.dat": "forward",
	"multi01.dat": "400", "mcl01.dat": "400", "bcast.dat": "drop", "zeromf.dat": "483",
	"cparam01.dat": "forward", "cparam02.dat": "forward", "regescrt.dat": "forward", "sdp01.dat": "forward",
	"inv2543.dat": "forward",

	"ipv6-good.dat": "forward", "ipv6-bad.dat": "400", "port-ambiguous.dat": "forward",
	"port-unambiguous.dat": "forward", "via-received-param-with-delim.dat": "forward",
	"via-received-param-no-delim.dat": "forward", "ipv6-in-sdp.dat": "forward", "mult-ip-in-header.dat": "forward",
	"mult-ip-in-sdp.dat": "forward", "ipv4-mapped-ipv6.dat": "forward", "ipv6-bug-abnf-3-colons.dat": "400",
	"ipv6-correct-abnf-2-colons.dat": "forward",
}

// TestTortureCorpus sends every message of the corpus over UDP and checks
// the outcome, then that clb still serves a normal call. One reader handles
// the datagrams in order and one instance gets every forward, so two probes
// sent after a message (one clb answers, one it forwards) mark the end of its
// outcome on each socket: a "drop" is nothing arriving before them.
func TestTortureCorpus(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, readers: 1})
	inst := c.instances["inst1"]
	phone := newPeer(t, "phone", "udp", nil)
	answered := newInvite(phone, c.udp, "probe", "probe-answered")
	mf := gosip.MaxForwardsHeader(0)
	answered.ReplaceHeader(&mf)
	forwarded := newInvite(phone, c.udp, "probe", "probe-forwarded")

	for _, dir := range []string{"rfc4475", "rfc5118"} {
		for _, entry := range manifest(t, filepath.Join("..", "testdata", "sip", dir)) {
			t.Run(entry.file, func(t *testing.T) {
				want, ok := corpusOutcomes[entry.file]
				if !ok {
					t.Fatalf("no expected outcome for %s (%s)", entry.file, entry.expected)
				}
				phone.sendRaw(entry.data, c.udp)
				phone.send(answered, c.udp)
				phone.send(forwarded, c.udp)
				var outcomes []string
				var out []byte
				for {
					e := phone.recvEnvelope()
					if e.msg != nil && e.msg.CallID() != nil && e.msg.CallID().Value() == "probe-answered" {
						break
					}
					// clb's answer echoes the request's fields, which the
					// parser may refuse: read the status line itself.
					var code int
					if _, err := fmt.Sscanf(string(e.raw), "SIP/2.0 %d ", &code); err != nil {
						t.Fatalf("phone got %q", e.raw)
					}
					outcomes = append(outcomes, strconv.Itoa(code))
				}
				for {
					e := inst.recvEnvelope()
					if cid := e.msg.CallID(); cid != nil && cid.Value() == "probe-forwarded" {
						break
					}
					outcomes = append(outcomes, "forward")
					out = e.raw
				}
				got := "drop"
				switch len(outcomes) {
				case 0:
				case 1:
					got = outcomes[0]
				default:
					t.Fatalf("outcomes %v, want one", outcomes)
				}
				if !contains(strings.Split(want, "|"), got) {
					t.Fatalf("outcome %s, want %s (MANIFEST: %s)", got, want, entry.expected)
				}
				if got == "forward" {
					checkForwarded(t, entry, out)
				}
			})
		}
	}

	// Still serving.
	d, _ := c.call(phone, "after-torture")
	phone.send(inDialog(phone, d, gosip.BYE, true), c.udp)
	inst.recvRequest("BYE")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkForwarded: the start line and the body are forwarded byte for byte,
// and nothing after the message's Content-Length is (dblreq.dat).
func checkForwarded(t *testing.T, entry corpusEntry, out []byte) {
	t.Helper()
	inLine, _, _ := bytes.Cut(entry.data, []byte("\r\n"))
	outLine, _, _ := bytes.Cut(out, []byte("\r\n"))
	if !bytes.Equal(inLine, outLine) {
		t.Errorf("start line changed:\n in: %q\nout: %q", inLine, outLine)
	}
	msg, err := gosip.ParseMessage(entry.data)
	if err != nil {
		t.Fatalf("forwarded what the parser refuses: %v", err)
	}
	_, outBody, _ := bytes.Cut(out, []byte("\r\n\r\n"))
	if !bytes.Equal(outBody, msg.Body()) {
		t.Errorf("body changed: %d bytes in, %d out", len(msg.Body()), len(outBody))
	}
}

type corpusEntry struct {
	file, expected string
	data           []byte
}

// manifest reads a MANIFEST.tsv and its files, checking their SHA-256.
func manifest(t *testing.T, dir string) []corpusEntry {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(dir, "MANIFEST.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	var out []corpusEntry
	lines := strings.Split(strings.TrimSpace(string(text)), "\n")
	head := strings.Split(lines[0], "\t")
	col := func(name string) int {
		for i, h := range head {
			if strings.HasPrefix(h, name) {
				return i
			}
		}
		return -1
	}
	fileCol, expCol, shaCol := col("file"), col("expected"), col("sha256") // sha256 is optional
	if fileCol < 0 || expCol < 0 {
		t.Fatalf("%s: MANIFEST lacks a file or expected column", dir)
	}
	for _, l := range lines[1:] {
		f := strings.Split(l, "\t")
		data, err := os.ReadFile(filepath.Join(dir, f[fileCol]))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); shaCol >= 0 && hex.EncodeToString(sum[:]) != f[shaCol] {
			t.Fatalf("%s: SHA-256 differs from the MANIFEST", f[fileCol])
		}
		out = append(out, corpusEntry{file: f[fileCol], expected: f[expCol], data: data})
	}
	if len(out) == 0 {
		t.Fatalf("%s: empty MANIFEST", dir)
	}
	return out
}
