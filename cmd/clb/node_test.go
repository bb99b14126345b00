package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"clb/admin"
	"clb/config"
)

// backend is one instance of a test: a SIP UAS answering every request with
// 200 and an HTTP app, both naming the instance, on loopback.
type backend struct {
	name string
	sip  *net.UDPConn
	web  *httptest.Server
	sipN atomic.Int64 // SIP requests answered
	webN atomic.Int64 // HTTP requests answered
}

func newBackend(t *testing.T, name string) *backend {
	return newBackendAt(t, name, net.IPv4(127, 0, 0, 1), 0, 0)
}

// newBackendAt is a backend on ip at the given SIP (UDP) and HTTP ports;
// 0 picks a free one.
func newBackendAt(t *testing.T, name string, ip net.IP, sipPort, httpPort int) *backend {
	b := &backend{name: name}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: sipPort})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: httpPort})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	b.sip = c
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := gosip.ParseMessage(buf[:n])
			if req, ok := m.(*gosip.Request); err == nil && ok {
				if req.Method != gosip.OPTIONS { // OPTIONS are health probes
					b.sipN.Add(1)
				}
				res := gosip.NewResponseFromRequest(req, 200, "OK", nil)
				res.AppendHeader(gosip.NewHeader("X-Served-By", name))
				_, _ = c.WriteTo([]byte(res.String()), from)
			}
		}
	}()
	b.web = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			b.webN.Add(1)
		}
		w.Header().Set("X-Served-By", name)
		fmt.Fprintln(w, name)
	}))
	b.web.Listener.Close()
	b.web.Listener = l
	b.web.Start()
	t.Cleanup(func() { c.Close(); b.web.Close() })
	return b
}

func (b *backend) yaml() string {
	return fmt.Sprintf("  - {name: %s, sip: udp://%s, http: %s}\n", b.name, b.sip.LocalAddr(), b.web.URL)
}

const nodeHead = `listen:
  sip: [udp://127.0.0.1:0]
  http: 127.0.0.1:0
  admin: 127.0.0.1:0
health: {interval: 200ms, timeout: 200ms, rise: 1, fall: 3}
loadfactor: {start: 0.5, increase: 0.5, period: 200ms}
instances:
`

// adminCall makes an admin API call and decodes its JSON answer.
func adminCall(t *testing.T, addr, method, path string, out any) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+addr+path, nil)
	if method == "POST" {
		req.Header.Set(admin.AdminHeader, "1")
	}
	client := http.Client{Timeout: 30 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if out != nil && res.StatusCode == 200 {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, body)
		}
	}
	return res.StatusCode, string(body)
}

func instanceNames(t *testing.T, addr string) string {
	var st admin.Status
	adminCall(t, addr, "GET", "/api/v1/status", &st)
	var names []string
	for _, i := range st.Instances {
		names = append(names, i.Name+":"+i.State)
	}
	return strings.Join(names, " ")
}

// traffic is SIP and HTTP clients sending through clb until stopped,
// counting failures.
type traffic struct {
	t        *testing.T
	stop     chan struct{}
	wg       sync.WaitGroup
	sent     atomic.Int64
	failures atomic.Int64
	progress chan struct{} // a value per 100 requests answered
	mu       sync.Mutex
	errs     []string
}

func (tr *traffic) fail(format string, args ...any) {
	tr.failures.Add(1)
	tr.mu.Lock()
	if len(tr.errs) < 10 {
		tr.errs = append(tr.errs, fmt.Sprintf(format, args...))
	}
	tr.mu.Unlock()
}

func (tr *traffic) done() {
	if tr.sent.Add(1)%100 == 0 {
		select {
		case tr.progress <- struct{}{}:
		default:
		}
	}
}

// await waits until n more hundreds of requests were answered.
func (tr *traffic) await(n int) {
	tr.t.Helper()
	for range n {
		select {
		case <-tr.progress:
		case <-time.After(30 * time.Second):
			tr.t.Fatal("traffic stalled")
		}
	}
}

func startTraffic(t *testing.T, httpAddr, sipAddr string) *traffic {
	tr := &traffic{t: t, stop: make(chan struct{}), progress: make(chan struct{}, 1)}
	for w := range 3 {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for s := 0; ; s++ {
				// A session of five requests, sticky by its cookies.
				jar, _ := cookiejar.New(nil)
				client := &http.Client{Jar: jar, Timeout: 10 * time.Second}
				for r := range 5 {
					select {
					case <-tr.stop:
						return
					default:
					}
					res, err := client.Get(fmt.Sprintf("http://%s/app/%d/%d/%d", httpAddr, w, s, r))
					if err != nil {
						tr.fail("http: %v", err)
						continue
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != 200 {
						tr.fail("http: %s", res.Status)
						continue
					}
					tr.done()
				}
			}
		}()
	}
	for w := range 2 {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			c, err := net.Dial("udp", sipAddr)
			if err != nil {
				tr.fail("sip: %v", err)
				return
			}
			defer c.Close()
			buf := make([]byte, 65535)
			for i := 0; ; i++ {
				select {
				case <-tr.stop:
					return
				default:
				}
				callID := fmt.Sprintf("reload-%d-%d", w, i)
				fmt.Fprintf(c, "MESSAGE sip:svc@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s\r\n"+
					"From: <sip:u%d@example.com>;tag=t%d\r\nTo: <sip:svc@example.com>\r\nCall-ID: %s\r\n"+
					"CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
					sipAddr, c.LocalAddr(), callID, i, i, callID)
				_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
				for {
					n, err := c.Read(buf)
					if err != nil {
						tr.fail("sip %s: %v", callID, err)
						break
					}
					if !strings.Contains(string(buf[:n]), callID) {
						continue // a late answer to an earlier request
					}
					if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 ") {
						tr.fail("sip %s: %q", callID, buf[:n])
					} else {
						tr.done()
					}
					break
				}
			}
		}()
	}
	return tr
}

func (tr *traffic) end() {
	close(tr.stop)
	tr.wg.Wait()
}

// TestReloadUnderTraffic: with SIP and HTTP traffic flowing, a file that does
// not validate is refused and the running configuration stays; a good one
// adds and removes instances; SIGHUP's path reloads too; no request fails.
func TestReloadUnderTraffic(t *testing.T) {
	a, b, c, d := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c"), newBackend(t, "d")
	path := writeFile(t, nodeHead+a.yaml()+b.yaml()+c.yaml())
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	n, err := newNode(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan struct{})
	stopped := make(chan error, 1)
	go func() { stopped <- n.run(ctx, hup) }()
	defer func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Error(err)
		}
	}()
	adminAddr := n.admin.Addr()
	sipAddr := strings.TrimPrefix(n.sip.Listeners()[0], "udp://")

	tr := startTraffic(t, n.http.Addr(), sipAddr)
	tr.await(3)

	// A file that does not validate: refused with its reason.
	if err := os.WriteFile(path, []byte(nodeHead+a.yaml()+a.yaml()), 0o644); err != nil {
		t.Fatal(err)
	}
	code, body := adminCall(t, adminAddr, "POST", "/api/v1/reload", nil)
	if code != 422 || !strings.Contains(body, path+":") || !strings.Contains(body, "instances[1].name") {
		t.Errorf("bad reload: %d %s", code, body)
	}
	// One that changes a listener: refused too.
	if err := os.WriteFile(path, []byte(strings.Replace(nodeHead, "http: 127.0.0.1:0", "http: 127.0.0.1:1", 1)+a.yaml()), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, body := adminCall(t, adminAddr, "POST", "/api/v1/reload", nil); code != 422 || !strings.Contains(body, "listen") {
		t.Errorf("listener change: %d %s", code, body)
	}
	if got := instanceNames(t, adminAddr); got != "a:up b:up c:up" {
		t.Errorf("after refused reloads: %s", got)
	}
	tr.await(3)

	// A good file: a out, d in (ramping).
	if err := os.WriteFile(path, []byte(nodeHead+b.yaml()+c.yaml()+d.yaml()), 0o644); err != nil {
		t.Fatal(err)
	}
	var r admin.Reloaded
	if code, body := adminCall(t, adminAddr, "POST", "/api/v1/reload", &r); code != 200 || fmt.Sprint(r.Added, r.Removed) != "[d] [a]" {
		t.Fatalf("reload: %d %s", code, body)
	}
	if got := instanceNames(t, adminAddr); got != "b:up c:up d:ramping" && got != "b:up c:up d:up" {
		t.Errorf("after reload: %s", got)
	}
	tr.await(3)
	aServed := a.sipN.Load() + a.webN.Load()

	// SIGHUP's path: a back.
	if err := os.WriteFile(path, []byte(nodeHead+a.yaml()+b.yaml()+c.yaml()+d.yaml()), 0o644); err != nil {
		t.Fatal(err)
	}
	var st admin.Status
	adminCall(t, adminAddr, "GET", "/api/v1/status", &st)
	hup <- struct{}{}
	for len(st.Instances) != 4 {
		adminCall(t, adminAddr, "GET", fmt.Sprintf("/api/v1/status?wait=10s&version=%d", st.Version), &st)
	}
	tr.await(5)
	tr.end()

	if f := tr.failures.Load(); f != 0 {
		t.Errorf("%d of %d requests failed: %v", f, tr.sent.Load()+f, tr.errs)
	}
	if a.sipN.Load()+a.webN.Load() <= aServed {
		t.Error("a took no traffic after it came back")
	}
	for _, be := range []*backend{b, c, d} {
		if be.sipN.Load() == 0 || be.webN.Load() == 0 {
			t.Errorf("%s served SIP %d HTTP %d", be.name, be.sipN.Load(), be.webN.Load())
		}
	}
	t.Logf("%d requests through three reloads, 0 failed", tr.sent.Load())
}

// TestReloadKeepsLiveState: a reload that adds an instance and changes a
// weight (so the hash table is rebuilt) keeps, for the instances that
// remain, their health counters, a ramp up and a drain where they were; the
// added instance starts its own ramp.
func TestReloadKeepsLiveState(t *testing.T) {
	const head = `listen: {http: 127.0.0.1:0}
health: {active: false, interval: 1h, fall: 3}
loadfactor: {start: 0.25, increase: 0.25, period: 1h}
instances:
`
	inst := func(name string, port, weight int) string {
		return fmt.Sprintf("  - {name: %s, http: http://127.0.0.1:%d, weight: %d}\n", name, port, weight)
	}
	path := writeFile(t, head+inst("a", 1, 100)+inst("b", 2, 100)+inst("c", 3, 100))
	n := loadNode(t, path)
	defer n.close()

	now := time.Now()
	n.health.Report("a", false) // one passive failure of fall 3
	if err := n.bal.Drain("b", now); err != nil {
		t.Fatal(err)
	}
	if err := n.bal.Disable("c", now); err != nil {
		t.Fatal(err)
	}
	if err := n.bal.Enable("c", now); err != nil { // ramps up from 0.25
		t.Fatal(err)
	}
	state := func() string {
		var s []string
		for _, st := range n.bal.Table().Status(now) {
			s = append(s, fmt.Sprintf("%s:%s:%.2f", st.Instance.Name, st.State, st.Factor))
		}
		return strings.Join(s, " ")
	}
	before := state()
	if before != "a:up:1.00 b:draining:0.75 c:ramping:0.25" {
		t.Fatalf("before the reload: %s", before)
	}

	if err := os.WriteFile(path, []byte(head+inst("a", 1, 300)+inst("b", 2, 100)+inst("c", 3, 100)+inst("d", 4, 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err := n.reload(); err != nil || fmt.Sprint(r.Added, r.Removed) != "[d] []" {
		t.Fatalf("reload: %+v %v", r, err)
	}
	if got, want := state(), before+" d:ramping:0.25"; got != want {
		t.Errorf("after the reload: %s, want %s", got, want)
	}
	if st, _ := n.health.Status("a"); st.Failures != 1 || !st.Up {
		t.Errorf("a's health after the reload: %+v, want up with 1 failure", st)
	}
	// The count goes on from where it was: two more failures make fall.
	n.health.Report("a", false)
	n.health.Report("a", false)
	if st, _ := n.health.Status("a"); st.Up {
		t.Errorf("a is up after 3 failures across a reload: %+v", st)
	}
}

// TestReloadRemovesInstanceEverywhere: an instance a reload removes is gone
// from every subscriber of the membership fan-out: the balancer, health and
// the metrics (its series and counts dropped).
func TestReloadRemovesInstanceEverywhere(t *testing.T) {
	const head = "listen: {http: 127.0.0.1:0}\nhealth: {active: false}\ninstances:\n"
	a, b := "  - {name: a, http: http://127.0.0.1:1}\n", "  - {name: b, http: http://127.0.0.1:2}\n"
	path := writeFile(t, head+a+b)
	n := loadNode(t, path)
	defer n.close()
	n.metrics.Request("http", "GET", "b", "2xx")
	n.health.Report("b", false)

	if err := os.WriteFile(path, []byte(head+a), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err := n.reload(); err != nil || fmt.Sprint(r.Removed) != "[b]" {
		t.Fatalf("reload: %+v %v", r, err)
	}
	if st := n.bal.Table().Status(time.Now()); len(st) != 1 || st[0].Instance.Name != "a" {
		t.Errorf("balancer after the reload: %+v", st)
	}
	if _, ok := n.health.Status("b"); ok {
		t.Error("health keeps a record of removed b")
	}
	if got := n.metrics.Instance("b").Requests.Load(); got != 0 {
		t.Errorf("metrics keep %d requests of removed b", got)
	}
	if got := n.members.Instances(); len(got) != 1 || got[0].Name != "a" {
		t.Errorf("membership after the reload: %+v", got)
	}
}

// loadNode builds a node from the file at path, logging warnings to the
// test; the caller closes or runs it.
func loadNode(t *testing.T, path string) *node {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := newNode(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
