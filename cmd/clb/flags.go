package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"clb/config"
)

// loadConfig parses a verb's flags (-config, and those extra defines, if
// not nil) and loads the file. With a nil configuration it returns the exit
// code to stop with.
func loadConfig(verb string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (cfg *config.Config, rest []string, exit int) {
	fs := flag.NewFlagSet("clb "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration `FILE` (YAML)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, 0
		}
		return nil, nil, 2
	}
	if *path == "" {
		fmt.Fprintf(stderr, "clb %s: -config FILE is required\n", verb)
		return nil, nil, 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintf(stderr, "clb %s: %s is not valid\n", verb, *path)
		return nil, nil, 1
	}
	return cfg, fs.Args(), 0
}
