package instance

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Started is the line an instance prints on its standard output once its
// addresses are bound, for whoever started it to configure clb with.
type Started struct {
	Name string `json:"name"`
	SIP  string `json:"sip,omitempty"`
	HTTP string `json:"http"`
}

// Main is the clb-instance command: it runs an instance until SIGINT or
// SIGTERM and returns the exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("clb-instance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "the instance's `NAME`, as clb's configuration names it (required)")
	sipAddr := fs.String("sip", "127.0.0.1:0", "UDP `host:port` of the SIP UAS; empty for none")
	httpAddr := fs.String("http", "127.0.0.1:0", "`host:port` of the HTTP app and the partners' endpoints")
	admin := fs.String("clb", "", "clb's admin API `URL` (http://host:port), where partners are found; several, one per clb node, separated by commas; - reads it from the first line of standard input")
	token := fs.String("token", "", "bearer `TOKEN` of clb's admin API")
	ring := fs.Duration("ring", 0, "how long an INVITE rings before its 200")
	level := fs.String("log", "info", "log `LEVEL`: debug, info, warn or error")
	etcd := fs.String("etcd", "", "etcd client `URL`s, comma-separated: register under PREFIX/instances/NAME with a lease kept alive (SPEC section 11)")
	etcdPrefix := fs.String("etcd-prefix", "/clb/", "clb's etcd.prefix")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *name == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: clb-instance -name NAME [-sip host:port] [-http host:port] [-clb URL|-] [-ring D] [-etcd URL[,URL]]")
		return 2
	}
	var lvl zapcore.Level
	if err := lvl.Set(*level); err != nil {
		fmt.Fprintf(stderr, "clb-instance: %v\n", err)
		return 2
	}
	cfg := zap.NewProductionEncoderConfig()
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(cfg), zapcore.Lock(zapcore.AddSync(stderr)), lvl)).
		With(zap.String("instance", *name))
	defer log.Sync()

	in, err := New(Options{Name: *name, SIP: *sipAddr, HTTP: *httpAddr, Token: *token, Ring: *ring, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "clb-instance: %v\n", err)
		return 1
	}
	line, _ := json.Marshal(Started{Name: in.Name(), SIP: in.SIPAddr(), HTTP: in.HTTPAddr()})
	fmt.Fprintf(stdout, "%s\n", line)
	if f, ok := stdout.(*os.File); ok {
		_ = f.Sync()
	}
	switch *admin {
	case "":
	case "-":
		// Whoever started the instance learns its addresses first, then
		// starts clb and tells the instance where clb's API is.
		got := make(chan string, 1)
		go func() {
			l, _ := bufio.NewReader(stdin).ReadString('\n')
			got <- strings.TrimSpace(l)
		}()
		select {
		case u := <-got:
			in.SetAdmin(u, *token)
		case <-time.After(time.Minute):
			fmt.Fprintln(stderr, "clb-instance: no admin URL on standard input within a minute")
			return 1
		}
	default:
		in.SetAdmin(*admin, *token)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("instance started", zap.String("sip", in.SIPAddr()), zap.String("http", in.HTTPAddr()))
	if *etcd != "" {
		registered := in.Register(ctx, strings.Split(*etcd, ","), *etcdPrefix, log.Named("etcd"))
		defer func() { stop(); <-registered }() // deregistered
	}
	if err := in.Serve(ctx); err != nil {
		log.Error("instance stopped", zap.Error(err))
		return 1
	}
	log.Info("instance stopped")
	return 0
}
