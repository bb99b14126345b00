package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"time"

	"clb/admin"
)

// maxKeyLine bounds one line of standard input.
const maxKeyLine = 1 << 20

// route prints "KEY OWNER REPLICA" for every key, with every instance live and
// fully ramped, through the same Route as live traffic: a new session's
// owner and replica partner. A file with a clusters: section gets a fourth
// column, the owner's cluster (SPEC section 9's three columns stay those of
// a file without).
func route(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, keys, exit := loadConfig("route", args, stderr, nil)
	if cfg == nil {
		return exit
	}
	b, err := newBalancer(cfg, cfg.Instances) // routing goes by names: nothing to resolve
	if err != nil {
		fmt.Fprintf(stderr, "clb route: %s: %v\n", cfg.File, err)
		return 1
	}
	table, now, clustered := b.Table(), time.Now(), len(cfg.Clusters) > 0
	w := bufio.NewWriterSize(stdout, 64<<10)
	var line []byte
	emit := func(key string) {
		line = admin.AppendRouteLine(line[:0], key, table.Route(key, "", now), clustered)
		w.Write(line)
	}
	if len(keys) > 0 {
		for _, k := range keys {
			emit(k)
		}
	} else {
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 64<<10), maxKeyLine)
		line := 0
		for sc.Scan() {
			line++
			if key := bytes.TrimSuffix(sc.Bytes(), []byte("\r")); len(key) > 0 {
				emit(string(key))
			}
		}
		if err := sc.Err(); err != nil {
			w.Flush()
			fmt.Fprintf(stderr, "clb route: standard input, after line %d: %v\n", line, err)
			return 1
		}
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "clb route: %v\n", err)
		return 1
	}
	return 0
}
