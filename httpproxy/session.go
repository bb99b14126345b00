package httpproxy

import (
	"time"

	"clb/balancer"
	"clb/metrics"
	"clb/policy"
)

// session is the routing policy of one request, apart from how HTTP/1.1
// carries it (head, framing, pool), so that any HTTP front end applies it
// alike: the key (SPEC section 5), the instance and replica partner, the
// retry target when the owner cannot be reached (section 7), the X-CLB-*
// fields and the cookies of the response.
type session struct {
	key     sessionKey
	last    string // the instance the request says served it (CLBROUTE)
	d       balancer.Decision
	retried bool // the replica partner was tried
}

// route decides where req goes now; d.Owner is nil when no instance is
// live.
func route(bal *balancer.Balancer, rules *policy.Rules, req policy.Source, now time.Time) session {
	ss := session{key: requestKey(rules, req)}
	ss.last, _ = req.Cookie(routeCookie)
	ss.d = bal.Table().RouteFor(balancer.HTTP, ss.key.key, ss.last, now)
	return ss
}

// failover moves the session off an owner that could not be reached, to
// its replica partner, which holds the session's state. False: there is no
// partner, or it was tried already. ss.d.Owner is nil after it when no
// instance is left.
func (ss *session) failover(bal *balancer.Balancer, now time.Time) bool {
	if ss.d.Replica == nil || ss.retried {
		return false
	}
	ss.retried = true
	ss.d = bal.Table().RouteWithout(balancer.HTTP, ss.key.key, ss.d.Owner.Name, now)
	return true
}

// appendFields appends the X-CLB-* fields for the instance.
func (ss *session) appendFields(dst []byte) []byte {
	return policy.AppendFields(dst, ss.key.key, &ss.d)
}

// appendCookies sets CLBKEY when the key is new or a rule gave another one
// than the cookie, and CLBROUTE when the serving instance is not the one the
// request named (sticky repair).
func (ss *session) appendCookies(dst []byte) []byte {
	if ss.key.minted || ss.key.ruled && ss.key.fromCookie != ss.key.key {
		dst = append(dst, "Set-Cookie: "+keyCookie+"="...)
		dst = policy.AppendEscapedKey(dst, ss.key.key)
		dst = append(dst, "; Path=/; HttpOnly; SameSite=Lax\r\n"...)
	}
	if ss.last != ss.d.Owner.Name {
		dst = append(dst, "Set-Cookie: "+routeCookie+"="...)
		dst = append(dst, ss.d.Owner.Name...)
		dst = append(dst, "; Path=/; HttpOnly; SameSite=Lax\r\n"...)
	}
	return dst
}

// count counts a request its owner answered with status.
func (ss *session) count(m *metrics.Metrics, method []byte, status int) {
	if m == nil {
		return
	}
	owner := ss.d.Owner.Name
	m.Request("http", metrics.Method(method), owner, statusClass(status))
	if ss.key.minted || ss.last != owner {
		m.Session("http", owner)
	}
	if ss.d.Repaired {
		m.Repair("http")
	}
}

func statusClass(status int) string {
	switch {
	case status < 200:
		return "1xx"
	case status < 300:
		return "2xx"
	case status < 400:
		return "3xx"
	case status < 500:
		return "4xx"
	}
	return "5xx"
}
