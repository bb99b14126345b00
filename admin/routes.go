package admin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"clb/balancer"
	"clb/config"
)

// Limits of POST /api/v1/route: the whole body is read before the first
// line is answered, so that an error never follows a 200.
const (
	maxRouteBody = 16 << 20
	maxRouteKey  = 64 << 10
)

// protocol is the protocol= parameter of a route call; on a bad one it has
// answered 400.
func protocol(w http.ResponseWriter, q url.Values) (balancer.Protocol, bool) {
	switch q.Get("protocol") {
	case "":
		return balancer.AnyProtocol, true
	case "sip":
		return balancer.SIP, true
	case "http":
		return balancer.HTTP, true
	}
	writeError(w, http.StatusBadRequest, "protocol: want sip or http")
	return 0, false
}

// routeBatch is POST /api/v1/route: many keys at once, one per line in the
// body, answered as clb route prints them ("KEY OWNER REPLICA", "-" for
// none, and the owner's cluster with a clusters: section) from one routing
// table at one moment, whose fingerprint is in X-CLB-Fingerprint. It lets
// an operator (or a test) compare what several nodes do with a large set
// of keys without a call per key. It changes nothing, so it needs no
// X-CLB-Admin.
func (s *Server) routeBatch(w http.ResponseWriter, r *http.Request) {
	p, ok := protocol(w, r.URL.Query())
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRouteBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: more than %d bytes", maxRouteBody))
			return
		}
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	var keys [][]byte
	for n := 1; len(body) > 0; n++ {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > maxRouteKey {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("line %d: a key of more than %d bytes", n, maxRouteKey))
			return
		}
		if len(line) > 0 {
			keys = append(keys, line)
		}
	}
	t, now := s.o.Balancer.Table(), s.o.Now()
	// As clb route: a cluster column only for a clusters: section.
	cs := t.Clusters()
	clustered := len(cs) != 1 || cs[0].Name != config.DefaultCluster
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-CLB-Fingerprint", fmt.Sprintf("%016x", t.Fingerprint(now)))
	w.Header().Set("X-CLB-Time", now.UTC().Format("2006-01-02T15:04:05.000000000Z07:00"))
	w.Header().Set("X-CLB-Keys", strconv.Itoa(len(keys)))
	out := make([]byte, 0, 64<<10)
	for _, k := range keys {
		key := string(k)
		out = AppendRouteLine(out, key, t.RouteFor(p, key, "", now), clustered)
		if len(out) >= 60<<10 {
			if _, err := w.Write(out); err != nil {
				return // the client went away
			}
			out = out[:0]
		}
	}
	_, _ = w.Write(out)
}

// AppendRouteLine appends key's decision as clb route prints it: "KEY OWNER
// REPLICA", "-" where there is none, and the owner's cluster when
// clustered; then a newline.
func AppendRouteLine(dst []byte, key string, d balancer.Decision, clustered bool) []byte {
	name := func(i *config.Instance) string {
		if i == nil {
			return "-"
		}
		return i.Name
	}
	dst = append(dst, key...)
	dst = append(dst, ' ')
	dst = append(dst, name(d.Owner)...)
	dst = append(dst, ' ')
	dst = append(dst, name(d.Replica)...)
	if clustered {
		dst = append(dst, ' ')
		if d.Owner != nil {
			dst = append(dst, d.Owner.ClusterName()...)
		} else {
			dst = append(dst, '-')
		}
	}
	return append(dst, '\n')
}
