package httpproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"clb/balancer"
)

// TestHTTPSSessionSticks: over HTTP/2, a new client gets CLBKEY and
// CLBROUTE, stays on one instance, the instance gets the X-CLB-* fields
// (none of the client's) and X-Forwarded-Proto: https, and clb reaches it
// with HTTP/1.1.
func TestHTTPSSessionSticks(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 4, https: true})
	cl := c.client()
	first := c.get(cl, "/page", "X-CLB-Replica", "evil", "X-Forwarded-Proto", "evil")
	if first.ProtoMajor != 2 {
		t.Fatalf("client spoke %s, want HTTP/2", first.Proto)
	}
	key, ok := setCookie(first, keyCookie)
	if !ok || len(key) != 22 {
		t.Fatalf("CLBKEY %q (set %v)", key, ok)
	}
	if route, _ := setCookie(first, routeCookie); route != servedBy(first) {
		t.Errorf("CLBROUTE %q, served by %s", route, servedBy(first))
	}
	got := c.lastRequest(servedBy(first))
	c.expectRouted(got, servedBy(first), key, "")
	if got.ProtoMajor != 1 || got.Header.Get("X-Forwarded-Proto") != "https" || got.Header.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("at the instance: %s, X-Forwarded-Proto %q, X-Forwarded-For %q", got.Proto, got.Header.Get("X-Forwarded-Proto"), got.Header.Get("X-Forwarded-For"))
	}
	if got.Host != strings.TrimPrefix(c.url, "https://") || got.Header.Get("X-Forwarded-Host") != got.Host {
		t.Errorf("Host %q, X-Forwarded-Host %q", got.Host, got.Header.Get("X-Forwarded-Host"))
	}
	for i := range 49 {
		res := c.get(cl, fmt.Sprintf("/page/%d", i))
		if servedBy(res) != servedBy(first) || len(res.Cookies()) != 0 {
			t.Fatalf("request %d: served by %s (session on %s), cookies %v", i, servedBy(res), servedBy(first), res.Cookies())
		}
	}
	c.expectRouted(c.lastRequest(servedBy(first)), servedBy(first), key, servedBy(first))
	if n := c.backends[servedBy(first)].conns.Load(); n != 1 {
		t.Errorf("%d connections to the instance for 50 requests", n)
	}
}

// TestHTTPSRepairAndFailover: over HTTP/2, a CLBROUTE naming another
// instance is repaired (X-CLB-Previous, CLBROUTE re-issued), and a closed
// owner's session goes to its replica partner.
func TestHTTPSRepairAndFailover(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 4, https: true})
	cl := c.client()
	d := c.bal.Table().RouteFor(balancer.HTTP, "k1", "", time.Now())
	other := d.Replica.Name
	res := c.get(cl, "/", "Cookie", "CLBKEY=k1; CLBROUTE="+other)
	if servedBy(res) != d.Owner.Name {
		t.Fatalf("served by %s, owner %s", servedBy(res), d.Owner.Name)
	}
	c.expectRouted(c.lastRequest(d.Owner.Name), d.Owner.Name, "k1", other)
	if route, _ := setCookie(res, routeCookie); route != d.Owner.Name {
		t.Errorf("CLBROUTE re-issued as %q, want %s", route, d.Owner.Name)
	}

	c.backends[d.Owner.Name].srv.Close()
	res = c.get(cl, "/after", "Cookie", "CLBKEY=k1; CLBROUTE="+d.Owner.Name)
	if res.StatusCode != 200 || servedBy(res) != d.Replica.Name {
		t.Fatalf("after %s closed: %d from %s, want the replica partner %s", d.Owner.Name, res.StatusCode, servedBy(res), d.Replica.Name)
	}
	if got := c.lastRequest(d.Replica.Name).Header.Get("X-Clb-Previous"); got != d.Owner.Name {
		t.Errorf("X-CLB-Previous %q, want %s", got, d.Owner.Name)
	}
	if route, _ := setCookie(res, routeCookie); route != d.Replica.Name {
		t.Errorf("CLBROUTE %q, want %s", route, d.Replica.Name)
	}
}

// TestHTTPSConcurrentStreams: 100 requests at once on one HTTP/2
// connection, each with its own key, each reach the owner of its key, and
// they spread over the instances.
func TestHTTPSConcurrentStreams(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 4, https: true})
	var dials atomic.Int32
	tr := &http.Transport{TLSClientConfig: c.ca.ClientConfig(), Protocols: new(http.Protocols),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	tr.Protocols.SetHTTP2(true)
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	// One connection first, so that the 100 share it.
	if res := c.get(cl, "/warm", "Cookie", "CLBKEY=warm"); res.ProtoMajor != 2 {
		t.Fatalf("%s, want HTTP/2", res.Proto)
	}
	release := make(chan struct{})
	var arrived sync.WaitGroup
	arrived.Add(100)
	for _, b := range c.backends {
		b.mu.Lock()
		b.handle = func(w http.ResponseWriter, r *http.Request) {
			arrived.Done()
			<-release // every stream is open at once
			fmt.Fprint(w, b.name)
		}
		b.mu.Unlock()
	}
	type result struct {
		key, by string
		err     error
	}
	results := make(chan result, 100)
	for i := range 100 {
		key := fmt.Sprintf("stream-%d", i)
		go func() {
			req, _ := http.NewRequest("GET", c.url+"/s", nil)
			req.Header.Set("Cookie", "CLBKEY="+key)
			res, err := cl.Do(req)
			if err != nil {
				results <- result{key: key, err: err}
				return
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			results <- result{key, string(body), err}
		}()
	}
	arrived.Wait()
	close(release)
	used := map[string]int{}
	for range 100 {
		r := <-results
		if r.err != nil {
			t.Fatalf("%s: %v", r.key, r.err)
		}
		if owner := c.bal.Table().RouteFor(balancer.HTTP, r.key, "", time.Now()).Owner.Name; r.by != owner {
			t.Errorf("%s served by %q, owner %s", r.key, r.by, owner)
		}
		used[r.by]++
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections to clb, want the 100 streams on one", n)
	}
	if len(used) < 3 {
		t.Errorf("100 keys went to %v only", used)
	}
}

// TestHTTPSBodies: request bodies of known and of unknown length reach the
// instance whole over HTTP/2 (sent on with Content-Length, and chunked),
// and a chunked response comes back whole.
func TestHTTPSBodies(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 2, https: true})
	for _, b := range c.backends {
		b.handle = func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "te=%v cl=%d ", r.TransferEncoding, r.ContentLength)
			w.(http.Flusher).Flush() // a chunked response
			fmt.Fprint(w, "end")
		}
	}
	cl := c.client()
	big := strings.Repeat("0123456789", 10_000)
	res, err := cl.Post(c.url+"/known", "text/plain", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	_, bodies := c.backends[servedBy(res)].requests()
	if bodies[len(bodies)-1] != big || string(body) != "te=[] cl=100000 end" {
		t.Errorf("known length: instance got %d bytes, answered %q", len(bodies[len(bodies)-1]), body)
	}
	pr, pw := io.Pipe()
	go func() {
		for range 10 {
			_, _ = io.WriteString(pw, "part;")
		}
		pw.Close()
	}()
	res, err = cl.Post(c.url+"/unknown", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	_, bodies = c.backends[servedBy(res)].requests()
	if bodies[len(bodies)-1] != strings.Repeat("part;", 10) || string(body) != "te=[chunked] cl=-1 end" {
		t.Errorf("unknown length: instance got %q, answered %q", bodies[len(bodies)-1], body)
	}
}

// TestHTTPSHTTP1AndWebSocket: a client that offers only http/1.1 by ALPN is
// served HTTP/1.1 on the same listener, WebSocket upgrades included.
func TestHTTPSHTTP1AndWebSocket(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3, https: true})
	res := c.get(c.client1(), "/one")
	if res.ProtoMajor != 1 || res.StatusCode != 200 {
		t.Fatalf("%s %d, want HTTP/1.1 200", res.Proto, res.StatusCode)
	}
	if got := c.lastRequest(servedBy(res)); got.Header.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("X-Forwarded-Proto %q", got.Header.Get("X-Forwarded-Proto"))
	}
	for _, b := range c.backends {
		b.handle = echoWebSocket
	}
	d := c.bal.Table().RouteFor(balancer.HTTP, "ws-user", "", time.Now())
	before := c.backends[d.Owner.Name].count()
	conn := c.dialTLS1(t)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: CLBKEY=ws-user\r\n\r\n")
	br := bufio.NewReader(conn)
	up, err := http.ReadResponse(br, nil)
	if err != nil || up.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", up, err)
	}
	if got := c.backends[d.Owner.Name].count() - before; got != 1 {
		t.Errorf("the owner %s got %d upgrades", d.Owner.Name, got)
	}
	if _, err := io.WriteString(conn, "hello"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo %q, %v", buf, err)
	}
}

// TestHTTPSInstances: https:// instances are reached over TLS, their
// certificates verified against the instance CA; one whose certificate
// the CA did not sign counts as unreachable, and its sessions go to the
// replica partner.
func TestHTTPSInstances(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 3, https: true, backendTLS: true})
	cl := c.client()
	res := c.get(cl, "/", "Cookie", "CLBKEY=k")
	d := c.bal.Table().RouteFor(balancer.HTTP, "k", "", time.Now())
	if res.StatusCode != 200 || servedBy(res) != d.Owner.Name {
		t.Fatalf("%d from %s, want %s", res.StatusCode, servedBy(res), d.Owner.Name)
	}
	if got := c.lastRequest(d.Owner.Name); got.TLS == nil {
		t.Error("the instance was reached without TLS")
	}
	// The owner now shows a certificate of another CA.
	owner := c.backends[d.Owner.Name]
	owner.srv.CloseClientConnections()
	owner.srv.TLS.Certificates = nil
	owner.srv.TLS.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		is := c.foreign()
		return &is, nil
	}
	res = c.get(cl, "/again", "Cookie", "CLBKEY=k; CLBROUTE="+d.Owner.Name)
	if res.StatusCode != 200 || servedBy(res) != d.Replica.Name {
		t.Fatalf("owner with a foreign certificate: %d from %s, want the replica partner %s", res.StatusCode, servedBy(res), d.Replica.Name)
	}
}

// TestHTTPSReload: a new certificate in the store reaches the next
// connection; an HTTP/2 connection opened before keeps serving requests.
func TestHTTPSReload(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 2, https: true})
	old := c.client()
	peer := func(cl *http.Client, path string) string {
		res, err := cl.Get(c.url + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || res.ProtoMajor != 2 {
			t.Fatalf("%s: %d %s", path, res.StatusCode, res.Proto)
		}
		return res.TLS.PeerCertificates[0].Subject.CommonName
	}
	if got := peer(old, "/before"); got != "clb" {
		t.Fatalf("certificate %q", got)
	}
	c.store.Swap(c.material("renewed"))
	if got := peer(c.client(), "/new"); got != "renewed" {
		t.Errorf("a new connection got %q, want renewed", got)
	}
	for i := range 3 {
		if got := peer(old, fmt.Sprintf("/old/%d", i)); got != "clb" {
			t.Errorf("the old connection now shows %q", got)
		}
	}
}

// TestHTTPSResponseFraming: what an instance answers reaches an HTTP/2
// client as it would an HTTP/1.1 one, whatever its framing: an interim
// 103 before the final answer, a HEAD's answer without its body, 204 and
// 304 without one, a chunked body unframed (its trailer dropped), a body of
// 1 MB whole; several Set-Cookie fields stay several, and no hop-by-hop
// field of HTTP/1.1 reaches the stream.
func TestHTTPSResponseFraming(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, https: true})
	big := strings.Repeat("abcdefghij", 100_000)
	c.backends[c.names[0]].handle = func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/hints":
			h.Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			h.Del("Link")
			fmt.Fprint(w, "hinted")
		case "/head":
			h.Set("Content-Length", "5")
			if r.Method != "HEAD" {
				fmt.Fprint(w, "hello")
			}
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		case "/chunked":
			h.Set("Trailer", "X-Sum")
			fmt.Fprint(w, "one,")
			w.(http.Flusher).Flush()
			fmt.Fprint(w, "two")
			h.Set("X-Sum", "2")
		case "/big":
			h.Add("Set-Cookie", "a=1")
			h.Add("Set-Cookie", "b=2")
			fmt.Fprint(w, big)
		}
	}
	cl := c.client()
	hints := 0
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if code == http.StatusEarlyHints && h.Get("Link") != "" {
				hints++
			}
			return nil
		},
	})
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/hints", 200, "hinted"},
		{"HEAD", "/head", 200, ""},
		{"GET", "/head", 200, "hello"},
		{"GET", "/204", 204, ""},
		{"GET", "/304", 304, ""},
		{"GET", "/chunked", 200, "one,two"},
		{"GET", "/big", 200, big},
	} {
		req, _ := http.NewRequestWithContext(ctx, tc.method, c.url+tc.path, nil)
		res, err := cl.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.ProtoMajor != 2 || res.StatusCode != tc.status || string(body) != tc.body {
			t.Errorf("%s %s: %s %d, %d bytes (%v), want HTTP/2 %d and %d bytes", tc.method, tc.path, res.Proto, res.StatusCode, len(body), err, tc.status, len(tc.body))
		}
		for _, name := range []string{"Connection", "Keep-Alive", "Transfer-Encoding", "Trailer"} {
			if v := res.Header.Values(name); len(v) > 0 {
				t.Errorf("%s %s: %s %v reached the stream", tc.method, tc.path, name, v)
			}
		}
		if tc.path == "/head" && tc.method == "HEAD" && res.ContentLength != 5 {
			t.Errorf("HEAD: Content-Length %d, want the instance's 5", res.ContentLength)
		}
		if tc.path == "/big" {
			var cookies []string
			for _, v := range res.Header.Values("Set-Cookie") {
				if !strings.HasPrefix(v, "CLB") {
					cookies = append(cookies, v)
				}
			}
			if strings.Join(cookies, ",") != "a=1,b=2" {
				t.Errorf("Set-Cookie %v, want the instance's a=1 and b=2 apart", res.Header.Values("Set-Cookie"))
			}
		}
	}
	if hints != 1 {
		t.Errorf("%d 103 Early Hints with Link reached the client, want 1", hints)
	}
}
