package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unitFile is docs/clb.service: the systemd unit README points to.
const unitFile = "../../docs/clb.service"

// readUnit parses a unit file into section → key → values, in order.
func readUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			unit[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: line %q is not KEY=VALUE in a section", path, line)
			}
			unit[section][k] = append(unit[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return unit
}

// TestSystemdUnit: docs/clb.service runs clb run as a Type=notify service
// (clb's sd_notify), reloads it by SIGHUP, and is hardened: not root, only
// CAP_NET_BIND_SERVICE, no new privileges, a read-only system, AF_UNIX kept
// for the notify socket, and a stop timeout longer than http.grace. Where
// systemd-analyze is installed (CLB_REQUIRE_SYSTEMD=1: it must be), the
// unit passes systemd-analyze verify, with the test binary standing in for
// /usr/local/bin/clb.
func TestSystemdUnit(t *testing.T) {
	svc := readUnit(t, unitFile)["Service"]
	if svc == nil {
		t.Fatal("no [Service] section")
	}
	one := func(key string) string {
		if v := svc[key]; len(v) == 1 {
			return v[0]
		}
		t.Errorf("%s: %q, want one value", key, svc[key])
		return ""
	}
	for key, want := range map[string]string{
		"Type":                  "notify",
		"NotifyAccess":          "main",
		"ExecReload":            "/bin/kill -HUP $MAINPID",
		"AmbientCapabilities":   "CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":       "yes",
		"ProtectSystem":         "strict",
		"KillSignal":            "SIGTERM",
	} {
		if got := one(key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
	if start := one("ExecStart"); !strings.Contains(start, "/clb run -config ") {
		t.Errorf("ExecStart=%s, want clb run -config FILE", start)
	}
	if user := one("User"); user == "" || user == "root" || user == "0" {
		t.Errorf("User=%s: want a user of its own", user)
	}
	if families := one("RestrictAddressFamilies"); !strings.Contains(families, "AF_UNIX") {
		t.Errorf("RestrictAddressFamilies=%s: sd_notify needs AF_UNIX", families)
	}
	stop, err := time.ParseDuration(strings.TrimSpace(one("TimeoutStopSec")) + "s")
	if err != nil || stop <= 10*time.Second {
		t.Errorf("TimeoutStopSec=%s: want more than the default http.grace, 10 s", one("TimeoutStopSec"))
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CLB_REQUIRE_SYSTEMD") != "" {
			t.Fatal("systemd-analyze is not installed and CLB_REQUIRE_SYSTEMD is set")
		}
		t.Skip("systemd-analyze is not installed: the unit is not verified")
	}
	text, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that the programs exist: the test binary is one.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "clb.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(text), "/usr/local/bin/clb", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	// It exits 0 for a key it ignores (unknown, or a value it cannot
	// parse), with a warning naming the file: those fail too.
	out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
	if err != nil || strings.Contains(string(out), copyPath) {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
