package instance

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// webrtcAnswer is an SDP answer a browser (RFC 8829 JSEP) takes for its
// offer, or false when the offer is not a WebRTC one (no DTLS
// fingerprint). The instance carries no media: the answer only has to be
// well formed, and what Chromium demands of a remote answer is there: per
// accepted m-section its mid, ICE credentials, a DTLS fingerprint and
// a=setup:active, rtcp-mux (its rtcpMuxPolicy is "require") and one codec
// of the offer's; the BUNDLE group of the accepted mids. Sections other
// than audio are refused (port 0). No candidates: ICE never completes,
// which the signalling under test does not need.
func webrtcAnswer(offer []byte) ([]byte, bool) {
	text := strings.ReplaceAll(string(offer), "\r\n", "\n")
	if !strings.Contains(text, "a=fingerprint:") {
		return nil, false
	}
	type section struct {
		mline  []string // media, port, proto, formats...
		mid    string
		rtpmap string // of the first format
		fmtp   string
	}
	var sections []*section
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(l, "m="):
			sections = append(sections, &section{mline: strings.Fields(l[2:])})
		case len(sections) == 0:
		case strings.HasPrefix(l, "a=mid:"):
			sections[len(sections)-1].mid = l[len("a=mid:"):]
		}
	}
	for _, s := range sections {
		if len(s.mline) < 4 {
			return nil, false
		}
		pt := s.mline[3]
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "a=rtpmap:"+pt+" ") && s.rtpmap == "" {
				s.rtpmap = l
			}
			if strings.HasPrefix(l, "a=fmtp:"+pt+" ") && s.fmtp == "" {
				s.fmtp = l
			}
		}
	}
	ufrag, pwd, fp := randomHex(4), randomHex(12), randomHex(32)
	var b strings.Builder
	b.WriteString("v=0\r\no=clb-instance " + randomDigits() + " 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
	var mids []string
	for _, s := range sections {
		if s.mline[0] == "audio" && s.mid != "" {
			mids = append(mids, s.mid)
		}
	}
	if len(mids) > 0 && strings.Contains(text, "a=group:BUNDLE") {
		b.WriteString("a=group:BUNDLE " + strings.Join(mids, " ") + "\r\n")
	}
	for _, s := range sections {
		if s.mline[0] != "audio" {
			b.WriteString("m=" + s.mline[0] + " 0 " + s.mline[2] + " " + s.mline[3] + "\r\nc=IN IP4 0.0.0.0\r\n")
			if s.mid != "" {
				b.WriteString("a=mid:" + s.mid + "\r\n")
			}
			continue
		}
		b.WriteString("m=audio 9 " + s.mline[2] + " " + s.mline[3] + "\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n")
		b.WriteString("a=ice-ufrag:" + ufrag + "\r\na=ice-pwd:" + pwd + "\r\n")
		b.WriteString("a=fingerprint:sha-256 " + colons(fp) + "\r\na=setup:active\r\n")
		if s.mid != "" {
			b.WriteString("a=mid:" + s.mid + "\r\n")
		}
		b.WriteString("a=sendrecv\r\na=rtcp-mux\r\n")
		if s.rtpmap != "" {
			b.WriteString(s.rtpmap + "\r\n")
		}
		if s.fmtp != "" {
			b.WriteString(s.fmtp + "\r\n")
		}
	}
	return []byte(b.String()), true
}

// newWebRTCOffer is an SDP offer a browser takes for a call to it: one audio
// section as webrtcAnswer's, with a=setup:actpass (the offerer's) and Opus.
func newWebRTCOffer() []byte {
	return []byte("v=0\r\no=clb-instance " + randomDigits() + " 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
		"a=group:BUNDLE 0\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n" +
		"a=ice-ufrag:" + randomHex(4) + "\r\na=ice-pwd:" + randomHex(12) + "\r\n" +
		"a=fingerprint:sha-256 " + colons(randomHex(32)) + "\r\na=setup:actpass\r\n" +
		"a=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomDigits() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = '1' + c%9
	}
	return string(out)
}

// colons writes hex as upper-case pairs joined by colons, a fingerprint's
// form (RFC 8122).
func colons(h string) string {
	h = strings.ToUpper(h)
	parts := make([]string, 0, len(h)/2)
	for i := 0; i+1 < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}
