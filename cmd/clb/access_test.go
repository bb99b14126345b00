package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunAccessLog: with log.access on, clb run writes a JSON line per HTTP
// and SIP request in its log stream, under logger "access"; a reload turns
// it off and on again.
func TestRunAccessLog(t *testing.T) {
	b := newBackend(t, "a")
	head := "listen: {sip: [udp://127.0.0.1:0], http: 127.0.0.1:0}\nhealth: {active: false}\ninstances:\n" + b.yaml()
	path := writeFile(t, head+"log: {access: true}\n")
	p := startCLB(t, path)
	httpAddr := p.started["http"].(string)
	sipAddr := strings.TrimPrefix(p.started["sip"].([]any)[0].(string), "udp://")

	get := func(path string) {
		t.Helper()
		res, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	get("/hello?q=1")
	e := p.log("http request")
	if e["logger"] != "access" || e["path"] != "/hello" || e["status"] != 200.0 || e["instance"] != "a" || e["outcome"] != "relayed" {
		t.Errorf("HTTP access line %v", e)
	}

	conn, err := net.Dial("udp", sipAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "MESSAGE sip:svc@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKacc1\r\nFrom: <sip:u@example.com>;tag=t1\r\n"+
		"To: <sip:svc@example.com>\r\nCall-ID: access-1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", sipAddr, conn.LocalAddr())
	buf := make([]byte, 4096)
	if n, err := conn.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 ") {
		t.Fatalf("MESSAGE: %q, %v", buf[:n], err)
	}
	e = p.log("sip request")
	if e["logger"] != "access" || e["call_id"] != "access-1" || e["key"] != "t1access-1" || e["instance"] != "a" ||
		e["outcome"] != "forwarded" || e["client"] != conn.LocalAddr().String() {
		t.Errorf("SIP access line %v", e)
	}

	reload := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		p.signal(syscall.SIGHUP)
		p.log("configuration reloaded")
	}
	reload(head + "log: {access: false}\n")
	get("/quiet")
	reload(head + "log: {access: true}\n")
	get("/loud")
	if e := p.log("http request"); e["path"] != "/loud" {
		t.Errorf("after a reload turned access logging off and on: line %v, want that of /loud", e)
	}
}
