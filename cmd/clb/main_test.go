package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"clb/balancer"
	"clb/config"
)

const example = "../../clb.yaml.example"

func clb(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clb.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckExample(t *testing.T) {
	code, out, errOut := clb(t, "", "check", "-config", example)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		example + ": OK",
		"udp://127.0.0.1:5060, tcp://127.0.0.1:5060",
		"instances: 3, total weight 300",
		"inst2  100     33.4%  udp://127.0.0.1:5072  http://127.0.0.1:8082",
		"full load 1m30s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckBadFile(t *testing.T) {
	path := writeFile(t, `listen: {sip: udp://127.0.0.1:5060}
instances:
  - {name: a, sip: 127.0.0.1:1, weight: -3}
  - {name: a, sip: 127.0.0.1:2}
helth: {}
`)
	code, out, errOut := clb(t, "", "check", "-config", path)
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	want := []string{
		path + ":3: instances[0].weight: -3: must be from 0 to 1000000",
		path + `:4: instances[1].name: duplicate name "a" (also instances[0])`,
		path + ":5: helth: unknown key",
	}
	lines := strings.Split(errOut, "\n")
	for i, w := range want {
		if i >= len(lines) || !strings.HasPrefix(lines[i], w) {
			t.Errorf("stderr line %d: want %q in\n%s", i+1, w, errOut)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"check"},
		{"route", "-config"},
		{"check", "-config", example, "extra"},
	} {
		if code, _, errOut := clb(t, "", args...); code != 2 || errOut == "" {
			t.Errorf("clb %q: exit %d, stderr %q", args, code, errOut)
		}
	}
	if code, _, _ := clb(t, "", "check", "-config", "/nonexistent/clb.yaml"); code != 1 {
		t.Errorf("missing file: exit %d", code)
	}
	if code, out, _ := clb(t, "", "help"); code != 0 || !strings.Contains(out, "clb route") {
		t.Errorf("help: exit %d, %q", code, out)
	}
}

// TestRouteMatchesBalancer: clb route prints what the balancer decides with
// every instance live, for keys as arguments and from standard input.
func TestRouteMatchesBalancer(t *testing.T) {
	cfg, err := config.Load(example)
	if err != nil {
		t.Fatal(err)
	}
	b, err := balancer.New(cfg.Instances, cfg.LoadFactor.Params())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for i := range 5000 {
		keys = append(keys, fmt.Sprintf("%08x-call-%d@10.0.0.%d", i*2654435761, i, i%256))
	}
	expected := func(keys []string) string {
		var sb strings.Builder
		for _, k := range keys {
			d := b.Route(k, "", time.Now())
			fmt.Fprintf(&sb, "%s %s %s\n", k, d.Owner.Name, d.Replica.Name)
		}
		return sb.String()
	}

	code, out, errOut := clb(t, "", append([]string{"route", "-config", example}, keys[:3]...)...)
	if code != 0 || out != expected(keys[:3]) {
		t.Errorf("arguments: exit %d, stderr %q\n got %q\nwant %q", code, errOut, out, expected(keys[:3]))
	}
	// CRLF line ends and blank lines are tolerated.
	stdin := strings.Join(keys, "\n") + "\r\n\n"
	code, out, errOut = clb(t, stdin, "route", "-config", example)
	if code != 0 || out != expected(keys) {
		t.Errorf("stdin: exit %d, stderr %q, %d bytes out, want %d", code, errOut, len(out), len(expected(keys)))
	}
	counts := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, " ")
		if len(f) != 3 || f[1] == f[2] {
			t.Fatalf("line %q is not KEY OWNER REPLICA", line)
		}
		counts[f[1]]++
	}
	for name, c := range counts {
		if c < 1400 || c > 1950 {
			t.Errorf("%s owns %d of 5000 keys, not about a third", name, c)
		}
	}
}

func TestRouteSingleInstanceHasNoReplica(t *testing.T) {
	path := writeFile(t, "listen: {http: 127.0.0.1:0}\ninstances: [{name: solo, http: http://127.0.0.1:8081}]\n")
	code, out, errOut := clb(t, "", "route", "-config", path, "k1", "k2")
	if code != 0 || out != "k1 solo -\nk2 solo -\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestRouteLineTooLong(t *testing.T) {
	code, _, errOut := clb(t, "k\n"+strings.Repeat("x", maxKeyLine+1)+"\n", "route", "-config", example)
	if code != 1 || !strings.Contains(errOut, "after line 1") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

// TestRouteGolden pins answers: any process, machine or instance order must
// give these, or live clb processes would disagree on where sessions are.
func TestRouteGolden(t *testing.T) {
	const want = "alice inst1 inst2\nbob inst3 inst1\ncarol inst1 inst2\n" +
		"a84c3f0e5b1d2e7f@10.0.3.17 inst1 inst2\n"
	keys := []string{"alice", "bob", "carol", "a84c3f0e5b1d2e7f@10.0.3.17"}
	code, out, _ := clb(t, "", append([]string{"route", "-config", example}, keys...)...)
	if code != 0 || out != want {
		t.Errorf("example config: got\n%swant\n%s", out, want)
	}
	reversed := writeFile(t, `listen: {sip: udp://127.0.0.1:5060}
instances:
  - {name: inst3, sip: 127.0.0.1:5073, weight: 100}
  - {name: inst2, sip: 127.0.0.1:5072}
  - {name: inst1, sip: 127.0.0.1:5071}
`)
	if code, out, _ := clb(t, "", append([]string{"route", "-config", reversed}, keys...)...); code != 0 || out != want {
		t.Errorf("instances in another order: got\n%swant\n%s", out, want)
	}
}
