package policy

import (
	"errors"
	"net"
	"time"

	"go.uber.org/zap"
)

// EqualFold compares b with s ASCII case-insensitively; s must be lower
// case. It is how header and parameter names are compared on the hot paths,
// without allocating.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// compactNames are the one-letter forms of SIP header field names (RFC 3261
// 7.3.3 and the IANA SIP header registry), by letter.
var compactNames = [26]string{
	'a' - 'a': "Accept-Contact", 'b' - 'a': "Referred-By", 'c' - 'a': "Content-Type",
	'd' - 'a': "Request-Disposition", 'e' - 'a': "Content-Encoding", 'f' - 'a': "From",
	'i' - 'a': "Call-ID", 'j' - 'a': "Reject-Contact", 'k' - 'a': "Supported",
	'l' - 'a': "Content-Length", 'm' - 'a': "Contact", 'n' - 'a': "Identity-Info",
	'o' - 'a': "Event", 'r' - 'a': "Refer-To", 's' - 'a': "Subject", 't' - 'a': "To",
	'u' - 'a': "Allow-Events", 'v' - 'a': "Via", 'x' - 'a': "Session-Expires",
	'y' - 'a': "Identity",
}

// LongName is name, or the long form of a compact SIP one.
func LongName(name string) string {
	if len(name) == 1 {
		if c := name[0] | 0x20; c >= 'a' && c <= 'z' && compactNames[c-'a'] != "" {
			return compactNames[c-'a']
		}
	}
	return name
}

// DefaultRetryAfter is the Retry-After of a 503 when none is configured.
const DefaultRetryAfter = 5 * time.Second

// RetryAfterSeconds is d as the whole seconds of a Retry-After field:
// rounded up, so that a sub-second health interval does not say "retry
// now"; DefaultRetryAfter when d is not positive.
func RetryAfterSeconds(d time.Duration) int {
	if d <= 0 {
		d = DefaultRetryAfter
	}
	return int((d + time.Second - 1) / time.Second)
}

// AcceptFailed is what an accept loop does after Accept returned err: false
// when the listener is closed (the loop ends), else true after logging it
// and pausing, so that a lasting error (out of file descriptors) does not
// spin the loop.
func AcceptFailed(log *zap.Logger, err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	log.Warn("accept", zap.Error(err))
	time.Sleep(acceptPause)
	return true
}

const acceptPause = 50 * time.Millisecond
