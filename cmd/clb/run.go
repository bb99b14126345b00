package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	gosip "github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zapcore"

	"clb/config"
	"clb/procs"
)

// runServe is clb run: serve until SIGINT or SIGTERM.
func runServe(args []string, stderr io.Writer) int {
	var format, cpuProfile *string
	cfg, rest, exit := loadConfig("run", args, stderr, func(fs *flag.FlagSet) {
		format = fs.String("log", "json", "log format: json or console")
		cpuProfile = fs.String("cpuprofile", "", "write a CPU profile of the whole run to `FILE` (diagnostics)")
	})
	if cfg == nil {
		return exit
	}
	if len(rest) > 0 {
		fmt.Fprintln(stderr, "usage: clb run -config FILE [-log json|console]")
		return 2
	}
	log, err := newLogger(*format, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "clb run: %v\n", err)
		return 2
	}
	defer log.Sync()
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
	sighup := make(chan os.Signal, 1)
	signal.Notify(sighup, syscall.SIGHUP)
	defer signal.Stop(sighup)
	hup := make(chan struct{})
	go func() {
		for {
			select {
			case <-sighup:
				log.Info("SIGHUP: reloading", zap.String("config", cfg.File))
				select {
				case hup <- struct{}{}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	if !procs.Chosen() {
		go procs.Run(ctx, procs.Options{}, log)
	}
	sd := notifier{socket: os.Getenv("NOTIFY_SOCKET"), log: log}
	if err := serve(ctx, cfg, log, hup, sd); err != nil {
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

// serve runs a node of cfg until ctx ends; a value on hup reloads the file.
// sd hears when the node is ready (its listeners are bound: what reaches
// them is queued until served), reloads and stops.
func serve(ctx context.Context, cfg *config.Config, log *zap.Logger, hup <-chan struct{}, sd notifier) error {
	n, err := newNode(cfg, log)
	if err != nil {
		return err
	}
	n.sd = sd
	log.Info("clb started", append(n.fields(), zap.String("config", cfg.File), zap.Int("instances", len(n.members.Instances())))...)
	// What starting left behind (the config, the packages' registrations) is
	// garbage, and the heap it grew is more than serving needs: the
	// collector's two-minute cycle and the scavenger would give it back
	// later; one collection now, before anything is served, gives it back at
	// once.
	debug.FreeOSMemory()
	sd.ready()
	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { sd.stopping(); close(stopped) })
	err = n.run(ctx, hup)
	if !stop() {
		<-stopped // STOPPING=1 is out before clb exits
	}
	return err
}
