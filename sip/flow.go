package sip

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"net/netip"
)

// paramFlow, in the Record-Route entry clb puts towards a WebSocket client
// (SPEC section 6a, RFC 5626 5.2 style), carries the flow token of the
// client's connection.
const paramFlow = "flow"

// flowKey makes and checks flow tokens: a token names one WebSocket
// connection (its transport, its id, its peer) and is authenticated by an
// HMAC-SHA-256 under the key, truncated to 128 bits, so that no client can
// make one for a connection it did not see, nor alter one. Connection ids
// are never reused within a process and start at a random value, so a
// token outlives its connection only as a token to refuse (430).
type flowKey struct {
	key []byte
}

// flowMAC is the length of a token's MAC.
const flowMAC = 16

// newFlowKey uses secret (tls.flow_key) or, when it is empty, 32 random
// bytes.
func newFlowKey(secret string) *flowKey {
	if secret != "" {
		return &flowKey{key: []byte(secret)}
	}
	k := make([]byte, 32)
	_, _ = rand.Read(k) // never fails (crypto/rand)
	return &flowKey{key: k}
}

// flowID names a connection: the transport it is on, its id, its peer.
type flowID struct {
	transport string // "ws" or "wss"
	id        uint64
	peer      netip.AddrPort
}

func (k *flowKey) mac(dst []byte, transport string, payload []byte) []byte {
	m := hmac.New(sha256.New, k.key)
	m.Write([]byte("clb flow\x00"))
	m.Write([]byte(transport))
	m.Write([]byte{0})
	m.Write(payload)
	return m.Sum(dst)[:len(dst)+flowMAC]
}

// token is f's flow token: base64url of id, peer and MAC, URI-parameter
// safe.
func (k *flowKey) token(f flowID) string {
	var b [8 + 18 + 32]byte
	payload := binary.BigEndian.AppendUint64(b[:0], f.id)
	payload, _ = f.peer.AppendBinary(payload) // never fails
	all := k.mac(payload, f.transport, payload)
	return base64.RawURLEncoding.EncodeToString(all)
}

// parse checks token for transport and returns the connection it names;
// ok is false for anything clb did not make (forged, altered, another
// transport's).
func (k *flowKey) parse(transport, token string) (f flowID, ok bool) {
	// 8 id + 6 or 18 peer + 16 MAC, in base64: at most 56 characters.
	if len(token) > 56 {
		return f, false
	}
	var b [42]byte
	n, err := base64.RawURLEncoding.Strict().Decode(b[:], []byte(token))
	// The decoder skips CR and LF even when strict: a token is only its
	// own encoding, so that one connection has one token.
	if err != nil || (n != 8+6+flowMAC && n != 8+18+flowMAC) || len(token) != base64.RawURLEncoding.EncodedLen(n) {
		return f, false
	}
	payload, got := b[:n-flowMAC], b[n-flowMAC:n]
	var want [32]byte
	if !hmac.Equal(k.mac(want[:0], transport, payload), got) {
		return f, false
	}
	f.transport = transport
	f.id = binary.BigEndian.Uint64(payload)
	if err := f.peer.UnmarshalBinary(payload[8:]); err != nil {
		return flowID{}, false
	}
	return f, true
}
