package metrics

import (
	"errors"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	rm "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// The Go runtime's and the process's metrics, under the names, help texts
// and meanings the client library's Go and process collectors gave them
// (an operator's dashboards and alerts use them): the runtime's from
// runtime/metrics, which does not stop the world as runtime.ReadMemStats
// does; the process's from /proc.

// memstat is a gauge or counter that is the sum of runtime/metrics values
// (a go_memstats_* one as the client library derived runtime.MemStats).
type memstat struct {
	d       *desc
	sources []string
}

const (
	rmHeapObjects    = "/memory/classes/heap/objects:bytes"
	rmHeapUnused     = "/memory/classes/heap/unused:bytes"
	rmHeapReleased   = "/memory/classes/heap/released:bytes"
	rmHeapFree       = "/memory/classes/heap/free:bytes"
	rmHeapStacks     = "/memory/classes/heap/stacks:bytes"
	rmMSpanInuse     = "/memory/classes/metadata/mspan/inuse:bytes"
	rmMCacheInuse    = "/memory/classes/metadata/mcache/inuse:bytes"
	rmTinyAllocs     = "/gc/heap/tiny/allocs:objects"
	rmGOGC           = "/gc/gogc:percent"
	rmGOMEMLIMIT     = "/gc/gomemlimit:bytes"
	rmGOMAXPROCS     = "/sched/gomaxprocs:threads"
	goDurationHelp   = "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles."
	goGOGCHelp       = "Heap size target percentage configured by the user, otherwise 100. This value is set by the GOGC environment variable, and the runtime/debug.SetGCPercent function. Sourced from /gc/gogc:percent."
	goGOMEMLIMITHelp = "Go runtime memory limit configured by the user, otherwise math.MaxInt64. This value is set by the GOMEMLIMIT environment variable, and the runtime/debug.SetMemoryLimit function. Sourced from /gc/gomemlimit:bytes."
	goGOMAXPROCSHelp = "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously. Sourced from /sched/gomaxprocs:threads."
)

func ms(name, typ, help string, sources ...string) memstat {
	return memstat{newDesc(name, typ, help), sources}
}

var (
	// The families that are sums of runtime/metrics values.
	rmFamilies = []memstat{
		ms("go_memstats_alloc_bytes", typeGauge, "Number of bytes allocated in heap and currently in use. Equals to /memory/classes/heap/objects:bytes.", rmHeapObjects),
		ms("go_memstats_alloc_bytes_total", typeCounter, "Total number of bytes allocated in heap until now, even if released already. Equals to /gc/heap/allocs:bytes.", "/gc/heap/allocs:bytes"),
		ms("go_memstats_buck_hash_sys_bytes", typeGauge, "Number of bytes used by the profiling bucket hash table. Equals to /memory/classes/profiling/buckets:bytes.", "/memory/classes/profiling/buckets:bytes"),
		ms("go_memstats_frees_total", typeCounter, "Total number of heap objects frees. Equals to /gc/heap/frees:objects + /gc/heap/tiny/allocs:objects.", "/gc/heap/frees:objects", rmTinyAllocs),
		ms("go_memstats_gc_sys_bytes", typeGauge, "Number of bytes used for garbage collection system metadata. Equals to /memory/classes/metadata/other:bytes.", "/memory/classes/metadata/other:bytes"),
		ms("go_memstats_heap_alloc_bytes", typeGauge, "Number of heap bytes allocated and currently in use, same as go_memstats_alloc_bytes. Equals to /memory/classes/heap/objects:bytes.", rmHeapObjects),
		ms("go_memstats_heap_idle_bytes", typeGauge, "Number of heap bytes waiting to be used. Equals to /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", rmHeapReleased, rmHeapFree),
		ms("go_memstats_heap_inuse_bytes", typeGauge, "Number of heap bytes that are in use. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes", rmHeapObjects, rmHeapUnused),
		ms("go_memstats_heap_objects", typeGauge, "Number of currently allocated objects. Equals to /gc/heap/objects:objects.", "/gc/heap/objects:objects"),
		ms("go_memstats_heap_released_bytes", typeGauge, "Number of heap bytes released to OS. Equals to /memory/classes/heap/released:bytes.", rmHeapReleased),
		ms("go_memstats_heap_sys_bytes", typeGauge, "Number of heap bytes obtained from system. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes + /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", rmHeapObjects, rmHeapUnused, rmHeapReleased, rmHeapFree),
		ms("go_memstats_mallocs_total", typeCounter, "Total number of heap objects allocated, both live and gc-ed. Semantically a counter version for go_memstats_heap_objects gauge. Equals to /gc/heap/allocs:objects + /gc/heap/tiny/allocs:objects.", "/gc/heap/allocs:objects", rmTinyAllocs),
		ms("go_memstats_mcache_inuse_bytes", typeGauge, "Number of bytes in use by mcache structures. Equals to /memory/classes/metadata/mcache/inuse:bytes.", rmMCacheInuse),
		ms("go_memstats_mcache_sys_bytes", typeGauge, "Number of bytes used for mcache structures obtained from system. Equals to /memory/classes/metadata/mcache/inuse:bytes + /memory/classes/metadata/mcache/free:bytes.", rmMCacheInuse, "/memory/classes/metadata/mcache/free:bytes"),
		ms("go_memstats_mspan_inuse_bytes", typeGauge, "Number of bytes in use by mspan structures. Equals to /memory/classes/metadata/mspan/inuse:bytes.", rmMSpanInuse),
		ms("go_memstats_mspan_sys_bytes", typeGauge, "Number of bytes used for mspan structures obtained from system. Equals to /memory/classes/metadata/mspan/inuse:bytes + /memory/classes/metadata/mspan/free:bytes.", rmMSpanInuse, "/memory/classes/metadata/mspan/free:bytes"),
		ms("go_memstats_next_gc_bytes", typeGauge, "Number of heap bytes when next garbage collection will take place. Equals to /gc/heap/goal:bytes.", "/gc/heap/goal:bytes"),
		ms("go_memstats_other_sys_bytes", typeGauge, "Number of bytes used for other system allocations. Equals to /memory/classes/other:bytes.", "/memory/classes/other:bytes"),
		ms("go_memstats_stack_inuse_bytes", typeGauge, "Number of bytes obtained from system for stack allocator in non-CGO environments. Equals to /memory/classes/heap/stacks:bytes.", rmHeapStacks),
		ms("go_memstats_stack_sys_bytes", typeGauge, "Number of bytes obtained from system for stack allocator. Equals to /memory/classes/heap/stacks:bytes + /memory/classes/os-stacks:bytes.", rmHeapStacks, "/memory/classes/os-stacks:bytes"),
		ms("go_memstats_sys_bytes", typeGauge, "Number of bytes obtained from system. Equals to /memory/classes/total:byte.", "/memory/classes/total:bytes"),
		ms("go_gc_gogc_percent", typeGauge, goGOGCHelp, rmGOGC),
		ms("go_gc_gomemlimit_bytes", typeGauge, goGOMEMLIMITHelp, rmGOMEMLIMIT),
		ms("go_sched_gomaxprocs_threads", typeGauge, goGOMAXPROCSHelp, rmGOMAXPROCS),
	}
	goGCDuration = newDesc("go_gc_duration_seconds", typeSummary, goDurationHelp)
	goGoroutines = newDesc("go_goroutines", typeGauge, "Number of goroutines that currently exist.")
	goInfo       = newDesc("go_info", typeGauge, "Information about the Go environment.", "version")
	goLastGC     = newDesc("go_memstats_last_gc_time_seconds", typeGauge, "Number of seconds since 1970 of last garbage collection.")
	goThreads    = newDesc("go_threads", typeGauge, "Number of OS threads created.")

	// rmSamples are the runtime/metrics names read, each once.
	rmSamples = sync.OnceValue(func() []string {
		var names []string
		for _, f := range rmFamilies {
			for _, src := range f.sources {
				if !slices.Contains(names, src) {
					names = append(names, src)
				}
			}
		}
		return names
	})
)

// registerGo registers the Go runtime's metrics.
func registerGo(r *registry) {
	descs := []*desc{goGCDuration, goGoroutines, goInfo, goLastGC, goThreads}
	for _, f := range rmFamilies {
		descs = append(descs, f.d)
	}
	r.register(collectGo, descs...)
}

// gcStats are kept for the next scrape: ReadGCStats reuses their pause
// history (some 8 KB) when it is there.
var gcStats = sync.Pool{New: func() any {
	return &debug.GCStats{PauseQuantiles: make([]time.Duration, 5)} // min, quartiles, max
}}

func collectGo(add func(*desc, []series)) {
	names := rmSamples()
	samples := make([]rm.Sample, len(names))
	for i, n := range names {
		samples[i].Name = n
	}
	rm.Read(samples)
	value := make(map[string]float64, len(samples))
	for _, s := range samples {
		switch s.Value.Kind() {
		case rm.KindUint64:
			value[s.Name] = float64(s.Value.Uint64())
		case rm.KindFloat64:
			value[s.Name] = s.Value.Float64()
		}
	}
	for _, f := range rmFamilies {
		v := 0.0
		for _, src := range f.sources {
			v += value[src]
		}
		add(f.d, []series{{value: v}})
	}

	add(goGoroutines, []series{{value: float64(runtime.NumGoroutine())}})
	threads, _ := runtime.ThreadCreateProfile(nil)
	add(goThreads, []series{{value: float64(threads)}})
	add(goInfo, []series{{values: labelValues{runtime.Version()}, value: 1}})

	gc := gcStats.Get().(*debug.GCStats)
	defer gcStats.Put(gc)
	debug.ReadGCStats(gc) // into the pause history of the last scrape's
	pauses := series{sum: gc.PauseTotal.Seconds(), count: uint64(gc.NumGC)}
	for i, q := range gc.PauseQuantiles {
		pauses.points = append(pauses.points, point{float64(i) / 4, q.Seconds()})
	}
	add(goGCDuration, []series{pauses})
	add(goLastGC, []series{{value: float64(gc.LastGC.UnixNano()) / 1e9}})
}

var (
	procCPU        = newDesc("process_cpu_seconds_total", typeCounter, "Total user and system CPU time spent in seconds.")
	procMaxFDs     = newDesc("process_max_fds", typeGauge, "Maximum number of open file descriptors.")
	procNetIn      = newDesc("process_network_receive_bytes_total", typeCounter, "Number of bytes received by the process over the network.")
	procNetOut     = newDesc("process_network_transmit_bytes_total", typeCounter, "Number of bytes sent by the process over the network.")
	procOpenFDs    = newDesc("process_open_fds", typeGauge, "Number of open file descriptors.")
	procRSS        = newDesc("process_resident_memory_bytes", typeGauge, "Resident memory size in bytes.")
	procStart      = newDesc("process_start_time_seconds", typeGauge, "Start time of the process since unix epoch in seconds.")
	procVirtual    = newDesc("process_virtual_memory_bytes", typeGauge, "Virtual memory size in bytes.")
	procVirtualMax = newDesc("process_virtual_memory_max_bytes", typeGauge, "Maximum amount of virtual memory available in bytes.")
)

// userHZ is the unit of /proc's CPU times: 100 on every Linux clb runs on
// (the client library assumed it too).
const userHZ = 100

// registerProcess registers the process's metrics, read from /proc at each
// scrape. A file that cannot be read leaves its families out of the scrape
// and counts a gathering error, rather than failing the whole scrape.
func registerProcess(r *registry) {
	r.register(func(add func(*desc, []series)) {
		buf := procBufs.Get().(*[]byte)
		defer procBufs.Put(buf)
		one := func(d *desc, v float64) { add(d, []series{{value: v}}) }
		failed := func(err error) bool {
			if err != nil {
				r.gatheringErrors.Add(1)
			}
			return err != nil
		}
		if st, err := readStat(buf); !failed(err) {
			one(procCPU, st.cpu)
			one(procVirtual, st.vsize)
			one(procRSS, st.rss)
			if start, err := processStart(buf, st.start); !failed(err) {
				one(procStart, start)
			}
		}
		if n, err := countFDs(); !failed(err) {
			one(procOpenFDs, float64(n))
		}
		if files, space, err := readLimits(buf); !failed(err) {
			one(procMaxFDs, files)
			one(procVirtualMax, space)
		}
		if in, out, err := readNetstat(buf); !failed(err) {
			one(procNetIn, in)
			one(procNetOut, out)
		}
	}, procCPU, procMaxFDs, procNetIn, procNetOut, procOpenFDs, procRSS, procStart, procVirtual, procVirtualMax)
}

// procBufs hold a scrape's /proc reads, one file at a time: kept for the
// next scrape rather than made anew for each file.
var procBufs = sync.Pool{New: func() any { return new([]byte) }}

// readProc reads the file at path into *buf (grown as needed and kept) and
// returns it as a string that points into *buf: valid until the next read
// into it.
func readProc(path string, buf *[]byte) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b := (*buf)[:0]
	if cap(b) == 0 {
		b = make([]byte, 0, 8<<10) // the largest file here is about 4 KB
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grows by doubling
		}
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	*buf = b
	return unsafe.String(unsafe.SliceData(b), len(b)), nil
}

type procStat struct {
	cpu, vsize, rss float64
	start           uint64 // clock ticks after boot
}

var errProcFormat = errors.New("metrics: unexpected format in /proc")

// readStat reads /proc/self/stat: CPU time, virtual and resident memory
// and start time.
func readStat(buf *[]byte) (procStat, error) {
	data, err := readProc("/proc/self/stat", buf)
	if err != nil {
		return procStat{}, err
	}
	// Fields after the command, which is in parentheses and may hold
	// anything: state is field 3 of proc(5), so f[i] is field i+3.
	i := strings.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, errProcFormat
	}
	f := strings.Fields(data[i+1:])
	if len(f) < 22 {
		return procStat{}, errProcFormat
	}
	var n [5]uint64
	for j, field := range []int{14, 15, 22, 23, 24} { // utime, stime, starttime, vsize, rss
		if n[j], err = strconv.ParseUint(f[field-3], 10, 64); err != nil {
			return procStat{}, errProcFormat
		}
	}
	return procStat{
		cpu:   float64(n[0]+n[1]) / userHZ,
		start: n[2],
		vsize: float64(n[3]),
		rss:   float64(n[4]) * float64(os.Getpagesize()),
	}, nil
}

// processStart is the Unix time the process started at, ticks after boot.
func processStart(buf *[]byte, ticks uint64) (float64, error) {
	data, err := readProc("/proc/stat", buf)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(data) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			boot, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, errProcFormat
			}
			return float64(boot) + float64(ticks)/userHZ, nil
		}
	}
	return 0, errProcFormat
}

// readLimits reads the soft limits on open files and on address space;
// unlimited is the largest uint64.
func readLimits(buf *[]byte) (files, space float64, err error) {
	data, err := readProc("/proc/self/limits", buf)
	if err != nil {
		return 0, 0, err
	}
	limits := [...]struct {
		name string
		v    *float64
	}{{"Max open files", &files}, {"Max address space", &space}}
	found := 0
	for line := range strings.Lines(data) {
		for _, l := range limits {
			rest, ok := strings.CutPrefix(line, l.name)
			if !ok {
				continue
			}
			v := l.v
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0, 0, errProcFormat
			}
			if f[0] == "unlimited" {
				*v = math.MaxUint64
			} else if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
				*v = float64(n)
			} else {
				return 0, 0, errProcFormat
			}
			found++
		}
	}
	if found != 2 {
		return 0, 0, errProcFormat
	}
	return files, space, nil
}

// readNetstat reads IpExt's InOctets and OutOctets from
// /proc/self/net/netstat: the bytes of the process's network namespace,
// as the client library read them.
func readNetstat(buf *[]byte) (in, out float64, err error) {
	data, err := readProc("/proc/self/net/netstat", buf)
	if err != nil {
		return 0, 0, err
	}
	var names []string
	for line := range strings.Lines(data) {
		if !strings.HasPrefix(line, "IpExt:") {
			continue // TcpExt's hundred fields are not split for nothing
		}
		f := strings.Fields(line)
		if names == nil {
			names = f // the header line comes first
			continue
		}
		found := 0
		for i := 1; i < len(f) && i < len(names); i++ {
			var v *float64
			switch names[i] {
			case "InOctets":
				v = &in
			case "OutOctets":
				v = &out
			default:
				continue
			}
			n, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return 0, 0, errProcFormat
			}
			*v = n
			found++
		}
		if found != 2 {
			return 0, 0, errProcFormat
		}
		return in, out, nil
	}
	return 0, 0, errProcFormat
}
