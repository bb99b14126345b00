package instance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"clb/policy"

	gosip "github.com/emiago/sipgo/sip"
)

// cluster is sample instances on loopback and a stand-in for clb's
// GET /api/v1/instances listing them. The test plays clb: it sets the
// X-CLB-* fields itself.
type cluster struct {
	t     *testing.T
	mu    sync.Mutex
	insts map[string]*Instance
	stops map[string]func()
	api   *httptest.Server
}

func newCluster(t *testing.T, names ...string) *cluster {
	c := &cluster{t: t, insts: map[string]*Instance{}, stops: map[string]func(){}}
	c.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/instances" {
			http.NotFound(w, r)
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		var list struct {
			Instances []Started `json:"instances"`
		}
		for _, in := range c.insts {
			list.Instances = append(list.Instances, Started{Name: in.Name(), SIP: in.SIPAddr(), HTTP: in.HTTPAddr()})
		}
		_ = json.NewEncoder(w).Encode(list)
	}))
	t.Cleanup(c.api.Close)
	for _, n := range names {
		c.start(n)
	}
	t.Cleanup(func() {
		for _, n := range names {
			c.stop(n)
		}
	})
	return c
}

// start runs an instance named name (again, with nothing held, after stop).
func (c *cluster) start(name string) *Instance {
	in, err := New(Options{Name: name, SIP: "127.0.0.1:0", HTTP: "127.0.0.1:0", Admin: c.api.URL})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = in.Serve(ctx); close(done) }()
	c.mu.Lock()
	c.insts[name] = in
	c.stops[name] = func() { cancel(); <-done }
	c.mu.Unlock()
	return in
}

func (c *cluster) stop(name string) {
	c.mu.Lock()
	stop := c.stops[name]
	delete(c.stops, name)
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (c *cluster) get(name string) *Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.insts[name]
}

// call sends an app request to instance to as clb would, for key with the
// given replica partner and previous instance.
func (c *cluster) call(to, method, path, body, key, replica, previous string) (int, string, string) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.get(to).HTTPAddr()+path, strings.NewReader(body))
	req.Header.Set("X-CLB-Key", policy.EscapeKey(key))
	req.Header.Set("X-CLB-Instance", to)
	if replica != "" {
		req.Header.Set("X-CLB-Replica", replica)
	}
	if previous != "" {
		req.Header.Set("X-CLB-Previous", previous)
	}
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, strings.TrimSpace(string(b)), res.Header.Get(servedBy)
}

// held is key's entry in name's dump: role and counter, then tasks and
// dialogs when there are any; "-" when name holds nothing of key.
func (c *cluster) held(name, key string) string {
	for _, h := range c.get(name).Dump() {
		if h.Key == key {
			s := fmt.Sprintf("%s:%d", h.Role, h.Counter)
			if h.Tasks > 0 {
				s += fmt.Sprintf(" tasks:%d", h.Tasks)
			}
			if h.Dialogs > 0 {
				s += fmt.Sprintf(" dialogs:%d", h.Dialogs)
			}
			return s
		}
	}
	return "-"
}

// settled asserts name's hold on key once every drop the instances have
// sent is done: drops go out after the answer.
func (c *cluster) settled(name, key, want string) {
	c.t.Helper()
	c.mu.Lock()
	insts := make([]*Instance, 0, len(c.insts))
	for _, in := range c.insts {
		insts = append(insts, in)
	}
	c.mu.Unlock()
	for _, in := range insts {
		in.store.drops.Wait()
	}
	if got := c.held(name, key); got != want {
		c.t.Fatalf("%s holds %s as %s, want %s", name, key, got, want)
	}
}

// TestReplicationAndTakeOver follows one key through the life the seeds
// describe: served by a and replicated to b; a dies and b takes over from
// its replica, replicating to c; a returns empty and fetches the key from
// its replica partner b; c drops the copy it no longer needs.
func TestReplicationAndTakeOver(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	key := "user/alice;x=1" // escaping on the way in is clb's

	for n := 1; n <= 3; n++ {
		code, body, by := c.call("a", "PUT", fmt.Sprintf("/counter?next=%d", n), "", key, "b", "")
		if code != 200 || by != "a" || !strings.Contains(body, fmt.Sprintf(`"counter":%d`, n)) {
			t.Fatalf("next=%d: %d %s from %s", n, code, body, by)
		}
	}
	// The same request sent twice is answered the same, once applied.
	if code, body, _ := c.call("a", "PUT", "/counter?next=3", "", key, "b", ""); code != 200 || !strings.Contains(body, `"counter":3`) {
		t.Errorf("next=3 again: %d %s", code, body)
	}
	if code, body, _ := c.call("a", "PUT", "/counter?next=7", "", key, "b", ""); code != 409 || !strings.Contains(body, `"counter":3`) {
		t.Errorf("a gap: %d %s", code, body)
	}
	if got := c.held("a", key) + " " + c.held("b", key) + " " + c.held("c", key); got != "owner:3 replica:3 -" {
		t.Fatalf("after three increments: %s", got)
	}

	// a dies; clb sends the key to b, its replica partner, naming c as the
	// new partner and a as the previous instance.
	c.stop("a")
	code, body, by := c.call("b", "PUT", "/counter?next=4", "", key, "c", "a")
	if code != 200 || by != "b" || !strings.Contains(body, `"counter":4`) {
		t.Fatalf("on b: %d %s from %s", code, body, by)
	}
	if got := c.held("b", key) + " " + c.held("c", key); got != "owner:4 replica:4" {
		t.Fatalf("after the take-over: %s", got)
	}

	// a returns with nothing; the key is a's again with b as partner.
	c.start("a")
	code, body, by = c.call("a", "PUT", "/counter?next=5", "", key, "b", "")
	if code != 200 || by != "a" || !strings.Contains(body, `"counter":5`) {
		t.Fatalf("back on a: %d %s from %s", code, body, by)
	}
	if got := c.held("a", key) + " " + c.held("b", key); got != "owner:5 replica:5" {
		t.Fatalf("after a's return: %s", got)
	}
	c.settled("c", key, "-")
}

// TestDrainMovesToPartner: a drained instance is alive; the key's new owner
// (its partner) takes over with its replica and tells the old owner to drop
// its copy.
func TestDrainMovesToPartner(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	c.call("a", "POST", "/tasks", "buy milk", "k", "b", "")
	c.call("a", "POST", "/tasks", "call bob", "k", "b", "")
	code, body, by := c.call("b", "GET", "/tasks", "", "k", "c", "a")
	if code != 200 || by != "b" || body != `{"key":"k","tasks":["buy milk","call bob"]}` {
		t.Fatalf("tasks on b: %d %s from %s", code, body, by)
	}
	c.settled("a", "k", "-")
	if got := c.held("c", "k"); got != "replica:0 tasks:2" {
		t.Errorf("c holds %s, want the replica", got)
	}
	if code, body, _ := c.call("b", "DELETE", "/tasks?i=0", "", "k", "c", ""); code != 200 || body != `{"key":"k","tasks":["call bob"]}` {
		t.Errorf("delete: %d %s", code, body)
	}
	if code, _, _ := c.call("b", "DELETE", "/tasks?i=5", "", "k", "c", ""); code != 404 {
		t.Errorf("delete a missing task: %d", code)
	}
}

// TestFetchFromPrevious: an owner with nothing, whose replica partner holds
// nothing either, fetches the key from the previous instance.
func TestFetchFromPrevious(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	c.call("a", "POST", "/counter", "", "k", "", "") // no partner live
	c.call("a", "POST", "/counter", "", "k", "", "")
	code, body, _ := c.call("c", "GET", "/counter", "", "k", "b", "a")
	if code != 200 || body != `{"key":"k","counter":2}` {
		t.Fatalf("c: %d %s", code, body)
	}
	if got := c.held("b", "k"); got != "replica:2" {
		t.Errorf("b holds %s after c took the key over", got)
	}
	c.settled("a", "k", "-")
}

func TestRefusals(t *testing.T) {
	c := newCluster(t, "a")
	a := c.get("a")
	// The app is reached through clb only.
	res, err := http.Get(a.HTTPAddr() + "/counter")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Errorf("no X-CLB-Key: %d", res.StatusCode)
	}
	// The partners' endpoints are not reachable through clb.
	req, _ := http.NewRequest("GET", a.HTTPAddr()+"/_clb/dump", nil)
	req.Header.Set("X-CLB-Instance", "a")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 403 {
		t.Errorf("dump through clb: %v %v", res.StatusCode, err)
	}
	if code, _, _ := c.call("a", "PUT", "/counter?next=x", "", "k", "", ""); code != 400 {
		t.Errorf("next=x: %d", code)
	}
	if code, _, _ := c.call("a", "POST", "/tasks", "  ", "k", "", ""); code != 400 {
		t.Errorf("empty task: %d", code)
	}
	if code, _, _ := c.call("a", "PATCH", "/counter", "", "k", "", ""); code != 405 {
		t.Errorf("PATCH: %d", code)
	}
	res, err = http.Get(a.HTTPAddr() + "/healthz")
	if err != nil || res.StatusCode != 200 || res.Header.Get(servedBy) != "a" {
		t.Errorf("healthz: %v %v", res, err)
	}
}

// uac is a SIP phone of a test on a loopback UDP socket.
type uac struct {
	t    *testing.T
	conn *net.UDPConn
}

func newUAC(t *testing.T) *uac {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &uac{t: t, conn: conn}
}

// send sends a request as clb would forward it to instance to, and returns
// the responses up to the first final one.
func (u *uac) send(c *cluster, to string, method, callID, toTag string, cseq int, key, replica, previous string) []*gosip.Response {
	u.t.Helper()
	toField := "<sip:svc@example.com>"
	if toTag != "" {
		toField += ";tag=" + toTag
	}
	msg := fmt.Sprintf("%s sip:svc@example.com SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s%d%s\r\n"+
		"From: <sip:alice@example.com>;tag=ftag\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nMax-Forwards: 69\r\n"+
		"X-CLB-Key: %s\r\nX-CLB-Instance: %s\r\n", method, u.conn.LocalAddr(), callID, cseq, method, toField, callID, cseq, method,
		policy.EscapeKey(key), to)
	if replica != "" {
		msg += "X-CLB-Replica: " + replica + "\r\n"
	}
	if previous != "" {
		msg += "X-CLB-Previous: " + previous + "\r\n"
	}
	msg += "Content-Length: 0\r\n\r\n"
	addr, _ := net.ResolveUDPAddr("udp", strings.TrimPrefix(c.get(to).SIPAddr(), "udp://"))
	if _, err := u.conn.WriteToUDP([]byte(msg), addr); err != nil {
		u.t.Fatal(err)
	}
	var out []*gosip.Response
	buf := make([]byte, 65535)
	for {
		_ = u.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := u.conn.Read(buf)
		if err != nil {
			u.t.Fatalf("%s %s: %v after %d responses", method, callID, err, len(out))
		}
		m, err := gosip.ParseMessage(buf[:n])
		if err != nil {
			u.t.Fatal(err)
		}
		res := m.(*gosip.Response)
		out = append(out, res)
		if res.StatusCode >= 200 {
			return out
		}
	}
}

func final(rs []*gosip.Response) string {
	r := rs[len(rs)-1]
	by := ""
	if h := r.GetHeader(servedBy); h != nil {
		by = h.Value()
	}
	return fmt.Sprintf("%d %s", r.StatusCode, by)
}

// TestDialogSurvivesOwner: a dialog set up on a is re-INVITEd and ended on
// b, from the replica a sent it; a BYE for a dialog no one holds gets 481.
func TestDialogSurvivesOwner(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	u := newUAC(t)
	rs := u.send(c, "a", "INVITE", "call-1", "", 1, "ftag:call-1", "b", "")
	if len(rs) != 2 || rs[0].StatusCode != 180 || final(rs) != "200 a" || rs[1].Contact() == nil {
		t.Fatalf("INVITE: %v", rs)
	}
	tag, _ := rs[1].To().Params.Get("tag")
	// A retransmitted INVITE gets the same 200.
	if again := u.send(c, "a", "INVITE", "call-1", "", 1, "ftag:call-1", "b", ""); final(again) != "200 a" {
		t.Errorf("INVITE again: %v", again)
	} else if tag2, _ := again[len(again)-1].To().Params.Get("tag"); tag2 != tag {
		t.Errorf("INVITE again: tag %s, want %s", tag2, tag)
	}
	c.stop("a")
	if rs := u.send(c, "b", "INVITE", "call-1", tag, 2, "ftag:call-1", "c", "a"); final(rs) != "200 b" {
		t.Fatalf("re-INVITE on b: %v", rs)
	}
	if rs := u.send(c, "b", "BYE", "call-1", tag, 3, "ftag:call-1", "c", "a"); final(rs) != "200 b" {
		t.Fatalf("BYE on b: %v", rs)
	}
	if rs := u.send(c, "b", "BYE", "call-1", tag, 3, "ftag:call-1", "c", "a"); final(rs) != "200 b" {
		t.Errorf("BYE again: %v", rs)
	}
	if got := c.held("c", "ftag:call-1"); got != "replica:0 dialogs:1" {
		t.Errorf("c holds %s", got)
	}
	if rs := u.send(c, "b", "BYE", "call-2", "nosuch", 2, "ftag:call-2", "c", ""); final(rs) != "481 b" {
		t.Errorf("BYE of an unknown dialog: %v", rs)
	}
	if rs := u.send(c, "b", "OPTIONS", "opt-1", "", 1, "x", "", ""); final(rs) != "200 b" {
		t.Errorf("OPTIONS: %v", rs)
	}
}

// TestCancelWhileRinging: a CANCEL during the ring time ends the INVITE with
// 487 and leaves no dialog.
func TestCancelWhileRinging(t *testing.T) {
	c := newCluster(t)
	in, err := New(Options{Name: "r", SIP: "127.0.0.1:0", HTTP: "127.0.0.1:0", Ring: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = in.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	c.mu.Lock()
	c.insts["r"] = in
	c.mu.Unlock()

	u := newUAC(t)
	addr, _ := net.ResolveUDPAddr("udp", strings.TrimPrefix(in.SIPAddr(), "udp://"))
	invite := fmt.Sprintf("INVITE sip:svc@example.com SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKc1\r\n"+
		"From: <sip:alice@example.com>;tag=ftag\r\nTo: <sip:svc@example.com>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"+
		"X-CLB-Key: k\r\nX-CLB-Instance: r\r\nContent-Length: 0\r\n\r\n", u.conn.LocalAddr())
	u.conn.WriteToUDP([]byte(invite), addr)
	codes := func(n int) []int {
		var out []int
		buf := make([]byte, 65535)
		for range n {
			_ = u.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			k, err := u.conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			m, _ := gosip.ParseMessage(buf[:k])
			out = append(out, m.(*gosip.Response).StatusCode)
		}
		return out
	}
	if got := codes(1); got[0] != 180 {
		t.Fatalf("ringing: %v", got)
	}
	cancelMsg := strings.Replace(strings.Replace(invite, "INVITE sip:", "CANCEL sip:", 1), "CSeq: 1 INVITE", "CSeq: 1 CANCEL", 1)
	u.conn.WriteToUDP([]byte(cancelMsg), addr)
	got := codes(2)
	if !(got[0] == 200 && got[1] == 487 || got[0] == 487 && got[1] == 200) {
		t.Errorf("after CANCEL: %v, want 200 and 487", got)
	}
	if d := in.Dump(); len(d) != 0 {
		t.Errorf("a cancelled call left %v", d)
	}
}

// TestReplicaUnreachableRefuses: an owner that holds nothing of a key and
// cannot reach the replica partner clb names refuses the request (503)
// rather than start the key anew, which would lose what the partner holds;
// once the partner can be reached the key goes on from its state. A
// previous owner that cannot be reached does not block a key its replica
// partner does not hold: it is often dead.
func TestReplicaUnreachableRefuses(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	for n := 1; n <= 2; n++ {
		if code, body, _ := c.call("a", "PUT", fmt.Sprintf("/counter?next=%d", n), "", "k", "b", ""); code != 200 {
			t.Fatalf("PUT next=%d on a: %d %s", n, code, body)
		}
	}
	// ghost: no clb lists it, so c cannot find its address.
	if code, body, _ := c.call("c", "PUT", "/counter?next=3", "", "k", "ghost", ""); code != 503 || !strings.Contains(body, "replica partner") {
		t.Errorf("replica partner unreachable: %d %s, want 503", code, body)
	}
	if got := c.held("c", "k"); got != "-" {
		t.Errorf("c holds %s after refusing", got)
	}
	if code, body, _ := c.call("c", "PUT", "/counter?next=3", "", "k", "b", ""); code != 200 || body != `{"key":"k","counter":3}` {
		t.Errorf("replica partner b reachable: %d %s, want counter 3", code, body)
	}
	if code, body, _ := c.call("b", "PUT", "/counter?next=1", "", "fresh", "c", "ghost"); code != 200 || body != `{"key":"fresh","counter":1}` {
		t.Errorf("previous owner unreachable, replica partner holds nothing: %d %s, want a new key", code, body)
	}
}

// TestSeveralAdminAPIs: partners are found through any of several clb
// nodes' admin APIs: the first refuses connections, the second answers.
func TestSeveralAdminAPIs(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	c.call("a", "PUT", "/counter?next=1", "", "k", "b", "")
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c.get("c").SetAdmin(dead.URL+", "+c.api.URL+"/", "")
	if code, body, _ := c.call("c", "GET", "/counter", "", "k", "b", "a"); code != 200 || body != `{"key":"k","counter":1}` {
		t.Errorf("c, with a dead admin API first: %d %s, want the counter fetched from b", code, body)
	}
}
