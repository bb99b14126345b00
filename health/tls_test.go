package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"clb/certs"
	"clb/certs/certstest"
)

// TestProbeHTTPS: an https:// instance is probed over TLS and passes when
// its certificate is of the instance CA; against other roots it fails.
func TestProbeHTTPS(t *testing.T) {
	ca := certstest.NewCA(t, "test CA")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.TLS = ca.Issue(t, certstest.Leaf{Name: "inst"}).ServerConfig()
	srv.StartTLS()
	defer srv.Close()
	port, _ := strconv.Atoi(srv.URL[strings.LastIndexByte(srv.URL, ':')+1:])
	e := endpoint("https", port)
	m, err := certs.Load(certs.Files{InstanceCA: ca.WriteCA(t, t.TempDir(), "ca")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := probeHTTP(ctx, e, "/", certs.NewStore(m)); err != nil {
		t.Errorf("probe with the instance CA: %v", err)
	}
	if _, err := probeHTTP(ctx, e, "/", &certs.Store{}); err == nil {
		t.Error("probe against the system's roots passed a test CA's certificate")
	}
}
