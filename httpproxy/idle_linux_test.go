package httpproxy

import (
	"bufio"
	"fmt"
	"net/http"
	"testing"
	"time"

	"clb/netpark/netparktest"
)

// TestHTTPSPipelinedParked: two HTTP/1.1 requests in two TLS records of one
// segment over HTTPS. crypto/tls reads both records from the socket with
// the first, so the second is in its buffer, not the socket's, when the
// first has been answered and the connection would park: it must be
// answered from there, not wait for bytes that never come.
func TestHTTPSPipelinedParked(t *testing.T) {
	netparktest.SkipUnsupported(t)
	c := newCluster(t, clusterOptions{n: 1, https: true, linger: time.Hour})
	conn := c.dialTLS1(t)
	// A bound on the test, not a wait: the answers come at once or never.
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	netparktest.Cork(t, conn, 1)
	for i := range 2 {
		fmt.Fprintf(conn, "GET /p%d HTTP/1.1\r\nHost: x\r\nCookie: CLBKEY=pipelined\r\n\r\n", i)
	}
	netparktest.Cork(t, conn, 0)
	br := bufio.NewReader(conn)
	for i := range 2 {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d of 2 pipelined requests: %v", i+1, err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("answer %d: %d", i+1, res.StatusCode)
		}
	}
}
