package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	gosip "github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zapcore"

	"clb/balancer"
	"clb/config"
	"clb/httpproxy"
	"clb/sip"
)

// runServe is clb run: serve until SIGINT or SIGTERM.
func runServe(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("clb run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration `FILE` (YAML)")
	format := fs.String("log", "json", "log format: json or console")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to `FILE` (diagnostics)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: clb run -config FILE [-log json|console]")
		return 2
	}
	log, err := newLogger(*format, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "clb run: %v\n", err)
		return 2
	}
	defer log.Sync()
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintf(stderr, "clb run: %s is not valid\n", *path)
		return 1
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "clb run: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "clb run: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("clb stopped", zap.Error(err))
		return 1
	}
	log.Info("clb stopped")
	return 0
}

// newLogger is zap's production logger (JSON) or its development one
// (console) writing to w. sipgo logs through log/slog; its default logger is
// bridged here, the one place library globals are set.
func newLogger(format string, w io.Writer) (*zap.Logger, error) {
	var cfg zap.Config
	var enc zapcore.Encoder
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
		enc = zapcore.NewJSONEncoder(cfg.EncoderConfig)
	case "console":
		cfg = zap.NewDevelopmentConfig()
		enc = zapcore.NewConsoleEncoder(cfg.EncoderConfig)
	default:
		return nil, fmt.Errorf("log format %q: want json or console", format)
	}
	log := zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), cfg.Level))
	gosip.SetDefaultLogger(slog.New(zapslog.NewHandler(log.Named("sipgo").Core())))
	return log, nil
}

// serve runs the front ends of cfg until ctx ends.
func serve(ctx context.Context, cfg *config.Config, log *zap.Logger) error {
	bal, err := balancer.New(cfg.Instances, cfg.LoadFactor.Params())
	if err != nil {
		return err
	}
	var servers []func(context.Context) error
	var fields []zap.Field
	if len(cfg.Listen.SIP) > 0 {
		srv, err := sip.NewServer(sip.ServerOptions{
			ProxyOptions: sip.ProxyOptions{
				Balancer:   bal,
				Rules:      cfg.Keys.SIP,
				Instances:  cfg.Instances,
				Logger:     log.Named("sip"),
				RetryAfter: cfg.Health.Interval,
			},
			Listen: cfg.Listen.SIP,
		})
		if err != nil {
			return err
		}
		servers = append(servers, srv.Serve)
		fields = append(fields, zap.Strings("sip", srv.Listeners()))
	}
	if !cfg.Listen.HTTP.IsZero() {
		srv, err := httpproxy.NewServer(cfg.Listen.HTTP.Addr(), httpproxy.Options{
			Balancer:   bal,
			Rules:      cfg.Keys.HTTP,
			Limits:     cfg.HTTP,
			Logger:     log.Named("http"),
			RetryAfter: cfg.Health.Interval,
		})
		if err != nil {
			return err
		}
		servers = append(servers, srv.Serve)
		fields = append(fields, zap.String("http", srv.Addr()))
	}
	log.Info("clb started", append(fields, zap.String("config", cfg.File), zap.Int("instances", len(cfg.Instances)))...)
	errs := make(chan error, len(servers))
	for _, serve := range servers {
		go func() { errs <- serve(ctx) }()
	}
	var first error
	for range servers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
