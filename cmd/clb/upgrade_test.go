package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"clb/admin"
)

// parallel runs f(0..n-1) on 32 goroutines and returns when all are done.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// routeAfter is clb's route for a session of key last served by last.
func (c *cluster) routeAfter(t *testing.T, key, last string) admin.Route {
	t.Helper()
	var r admin.Route
	path := "/api/v1/route?key=" + url.QueryEscape(key) + "&last=" + url.QueryEscape(last)
	if code, body := adminCall(t, c.admin[len("http://"):], "GET", path, &r); code != 200 {
		t.Fatalf("route: %d %s", code, body)
	}
	return r
}

// TestOnlineUpgrade is SPEC section 13's upgrade with real processes: 300
// web sessions and 100 SIP dialogs on blue (green closed); blue is closed
// and green opened by the admin API; 300 new web sessions all start on
// green; the old sessions stay on their instances with their counters; an
// instance of blue killed meanwhile moves its sessions to their replica
// partners in blue, never to green; nothing is lost, and the status counts
// each cluster's sessions of the last minute.
func TestOnlineUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	c, err := startCluster(clusterOptions{
		groups: []clusterGroup{
			{name: "blue", weight: 100, names: []string{"blue1", "blue2", "blue3"}},
			{name: "green", weight: 0, names: []string{"green1", "green2", "green3"}},
		},
		exe: os.Args[0], env: []string{"CLB_TEST_MAIN=1"}, yaml: demoYAML,
	}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.close(); err != nil {
			t.Errorf("cluster: %v", err)
		}
	})
	ph, err := newPhone(c.sip)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.close()
	ctx := context.Background()
	base := "http://" + c.http
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	defer transport.CloseIdleConnections()
	// A browser keeps clb's cookies: CLBROUTE names the instance, and so
	// the cluster, of the session.
	newWeb := func(user string) *webSession {
		jar, _ := cookiejar.New(nil)
		return &webSession{client: &http.Client{Jar: jar, Transport: transport, Timeout: 10 * time.Second}, query: "&user=" + user}
	}
	inBlue := func(name string) bool { return strings.HasPrefix(name, "blue") }

	// 1. Blue serves everything.
	old := make([]*webSession, 300)
	parallel(len(old), func(i int) {
		old[i] = newWeb(fmt.Sprintf("w%d", i))
		old[i].increment(base)
	})
	calls := make([]*call, 100)
	homes := make([]string, len(calls))
	parallel(len(calls), func(i int) {
		calls[i] = ph.newCall(fmt.Sprintf("d%d", i))
		if x := calls[i].invite(ctx); x.ok() {
			homes[i] = x.servedBy
		}
	})
	perInstance := map[string]int{}
	for i, s := range old {
		if s.lost != "" || !inBlue(s.served[0]) {
			t.Fatalf("web session w%d: lost %q, served by %v with green closed", i, s.lost, s.served)
		}
		perInstance[s.served[0]]++
	}
	for i, h := range homes {
		if !inBlue(h) {
			t.Fatalf("dialog d%d: INVITE answered by %q with green closed", i, h)
		}
		perInstance[h]++
	}

	// 2. The upgrade starts: blue closed, green open.
	for _, w := range []string{"/api/v1/clusters/blue/weight?value=0", "/api/v1/clusters/green/weight?value=100"} {
		if code, body := adminCall(t, c.admin[len("http://"):], "POST", w, nil); code != 200 {
			t.Fatalf("%s: %d %s", w, code, body)
		}
	}
	fresh := make([]*webSession, 300)
	parallel(len(fresh), func(i int) {
		fresh[i] = newWeb(fmt.Sprintf("n%d", i))
		fresh[i].increment(base)
	})
	for i, s := range fresh {
		if s.lost != "" || inBlue(s.served[0]) {
			t.Fatalf("new session n%d after blue closed: lost %q, served by %v", i, s.lost, s.served)
		}
	}
	parallel(len(old), func(i int) { old[i].increment(base) })
	for i, s := range old {
		if s.lost != "" || len(s.served) != 1 || s.counter != 2 {
			t.Fatalf("web session w%d after blue closed: lost %q, served by %v, counter %d", i, s.lost, s.served, s.counter)
		}
	}

	// 3. An instance of blue dies meanwhile: the one with most sessions.
	victim := "blue1"
	for name, n := range perInstance {
		if n > perInstance[victim] {
			victim = name
		}
	}
	replicas := map[string]string{} // key → its replica partner before the kill
	for i, s := range old {
		if s.served[0] == victim {
			replicas[fmt.Sprintf("w%d", i)] = c.routeAfter(t, fmt.Sprintf("user:w%d", i), victim).Replica
		}
	}
	for i, h := range homes {
		if h == victim {
			replicas[fmt.Sprintf("d%d", i)] = c.routeAfter(t, fmt.Sprintf("user:d%d", i), victim).Replica
		}
	}
	if err := c.kill(victim); err != nil {
		t.Fatal(err)
	}
	c.waitState(t, victim, "down", 10*time.Second)

	parallel(len(old), func(i int) { old[i].increment(base) })
	moved := 0
	for i, s := range old {
		now := s.served[len(s.served)-1]
		switch {
		case s.lost != "" || s.counter != 3:
			t.Errorf("web session w%d: lost %q, counter %d after three increments", i, s.lost, s.counter)
		case s.served[0] == victim:
			moved++
			if want := replicas[fmt.Sprintf("w%d", i)]; now != want || !inBlue(now) {
				t.Errorf("web session w%d of %s went to %s, not its replica partner %s in blue", i, victim, now, want)
			}
		case now != s.served[0]:
			t.Errorf("web session w%d moved from %s to %s", i, s.served[0], now)
		}
	}
	var mu sync.Mutex
	parallel(len(calls), func(i int) {
		re, bye := calls[i].reinvite(ctx), calls[i].bye(ctx)
		mu.Lock()
		defer mu.Unlock()
		want := homes[i]
		if homes[i] == victim {
			moved++
			want = replicas[fmt.Sprintf("d%d", i)]
		}
		if !re.ok() || !bye.ok() || re.servedBy != want || bye.servedBy != want || !inBlue(want) {
			t.Errorf("dialog d%d of %s: re-INVITE %d from %s, BYE %d from %s, want 200s from %s in blue",
				i, homes[i], re.code, re.servedBy, bye.code, bye.servedBy, want)
		}
	})
	if moved == 0 {
		t.Errorf("no session was on %s", victim)
	}
	parallel(len(fresh), func(i int) { fresh[i].increment(base) })
	for i, s := range fresh {
		if s.lost != "" || len(s.served) != 1 || s.counter != 2 {
			t.Errorf("new session n%d: lost %q, served by %v, counter %d", i, s.lost, s.served, s.counter)
		}
	}

	// 4. The status shows where sessions are: 400 keys routed to blue in
	// the last minute, 300 to green (estimates).
	var st admin.Status
	adminCall(t, c.admin[len("http://"):], "GET", "/api/v1/status", &st)
	sessions := map[string]int{}
	for _, cl := range st.Clusters {
		sessions[cl.Name] = cl.Sessions
	}
	for name, want := range map[string]int{"blue": 400, "green": 300} {
		if math.Abs(float64(sessions[name]-want)) > 0.05*float64(want) {
			t.Errorf("cluster %s: %d sessions in the last minute, want about %d", name, sessions[name], want)
		}
	}
	t.Logf("%d sessions of %s moved to their replica partners in blue; 0 lost; last minute: %v", moved, victim, sessions)
}
