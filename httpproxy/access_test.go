package httpproxy

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"clb/accesslog"
	"clb/accesslog/accesslogtest"
	"clb/balancer"
)

func accessLines(t *testing.T) (*accesslog.Log, <-chan map[string]any) { return accesslogtest.Lines(t) }

func nextLine(t *testing.T, lines <-chan map[string]any) map[string]any {
	t.Helper()
	return accesslogtest.Next(t, lines, 10*time.Second)
}

func expectLine(t *testing.T, e map[string]any, want map[string]any) {
	t.Helper()
	accesslogtest.Expect(t, e, "http", accesslog.MsgHTTP, want)
}

// TestAccessLogHTTP: one JSON line per request under logger "access", with
// the key, the instance and its replica partner, the status and the bytes
// the client received; a retried request names the partner that served it
// and the owner it failed on; a 503 and a 400 of clb's own say why; the
// path goes without its query.
func TestAccessLogHTTP(t *testing.T) {
	access, lines := accessLines(t)
	c := newCluster(t, clusterOptions{n: 3, access: access})

	// A request relayed: every byte the client read is counted.
	conn := dialRaw(t, c.server.Addr())
	fmt.Fprint(conn, "GET /cart?token=secret HTTP/1.1\r\nHost: x\r\nCookie: CLBKEY=alice\r\nConnection: close\r\n\r\n")
	raw, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	d := c.bal.Table().RouteFor(balancer.HTTP, "alice", "", time.Now())
	e := nextLine(t, lines)
	expectLine(t, e, map[string]any{"method": "GET", "path": "/cart", "status": 200.0, "key": "alice",
		"instance": d.Owner.Name, "replica": d.Replica.Name, "previous": "", "retried": false,
		"outcome": "relayed", "bytes": float64(len(raw)), "client": conn.LocalAddr().String()})
	if dur, ok := e["duration"].(float64); !ok || dur <= 0 {
		t.Errorf("duration %v, want seconds > 0", e["duration"])
	}

	// A retried request: the owner takes it and closes without answering.
	cl := c.client()
	first := c.get(cl, "/")
	owner := servedBy(first)
	key, _ := setCookie(first, keyCookie)
	d = c.bal.Table().RouteFor(balancer.HTTP, key, "", time.Now())
	expectLine(t, nextLine(t, lines), map[string]any{"key": key, "instance": owner, "status": 200.0, "retried": false})
	c.backends[owner].handle = func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	}
	if res := c.get(cl, "/again"); res.StatusCode != 200 || servedBy(res) != d.Replica.Name {
		t.Fatalf("retried request: %d from %s, want 200 from %s", res.StatusCode, servedBy(res), d.Replica.Name)
	}
	e = nextLine(t, lines)
	expectLine(t, e, map[string]any{"path": "/again", "key": key, "instance": d.Replica.Name, "previous": owner,
		"status": 200.0, "retried": true, "outcome": "relayed"})

	// No instance: clb's own 503.
	for _, n := range c.names {
		if err := c.bal.Disable(n, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if res := c.get(cl, "/down"); res.StatusCode != 503 {
		t.Fatalf("status %d, want 503", res.StatusCode)
	}
	expectLine(t, nextLine(t, lines), map[string]any{"path": "/down", "key": key, "instance": "", "replica": "",
		"status": 503.0, "outcome": "no_instance", "retried": false})

	// A head clb refuses before it has a key.
	conn = dialRaw(t, c.server.Addr())
	fmt.Fprint(conn, "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
	raw, _ = io.ReadAll(conn)
	expectLine(t, nextLine(t, lines), map[string]any{"method": "GET", "path": "/x", "status": 400.0, "key": "",
		"instance": "", "outcome": "malformed_request", "bytes": float64(len(raw))})

	// Off: nothing more is written.
	access.Set(false, 1)
	for _, n := range c.names {
		if err := c.bal.Enable(n, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	c.get(cl, "/quiet")
	access.Set(true, 1)
	c.get(cl, "/loud")
	if e := nextLine(t, lines); e["path"] != "/loud" {
		t.Errorf("after access logging was off and on again: line %v, want that of /loud", e)
	}
}

// TestAccessLogUnparsedHead: a request line clb cannot parse is logged
// without the method and path of the request before it on the connection.
func TestAccessLogUnparsedHead(t *testing.T) {
	access, lines := accessLines(t)
	c := newCluster(t, clusterOptions{n: 1, access: access})
	conn := dialRaw(t, c.server.Addr())
	fmt.Fprint(conn, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	readResponse(t, conn)
	expectLine(t, nextLine(t, lines), map[string]any{"path": "/first", "status": 200.0})
	fmt.Fprint(conn, "GET /second HTTP/1.7\r\nHost: x\r\n\r\n")
	if res := readResponse(t, conn); res.StatusCode != 505 {
		t.Fatalf("status %d, want 505", res.StatusCode)
	}
	e := nextLine(t, lines)
	expectLine(t, e, map[string]any{"method": "", "path": "", "key": "", "instance": "", "status": 505.0,
		"outcome": "malformed_request"})
	if _, ok := e["client"]; !ok {
		t.Errorf("no client in %v", e)
	}
}
