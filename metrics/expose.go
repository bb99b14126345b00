package metrics

import (
	"compress/gzip"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// The Prometheus text exposition format, version 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/), written by
// clb itself: the client library, and the protobuf runtime it brought, were
// 5.4 MB of a 20.8 MB binary and 3.7 MB of its resident memory at start
// (measured once etcd's gRPC client was gone).

// contentType is what a scrape is answered with.
const contentType = "text/plain; version=0.0.4; charset=utf-8"

// Family types.
const (
	typeCounter   = "counter"
	typeGauge     = "gauge"
	typeHistogram = "histogram"
	typeSummary   = "summary"
)

// maxLabels is the most labels a clb family has.
const maxLabels = 4

// labelValues are a series' label values in its family's label order, the
// unused ones "": comparable, so a map key without joining strings.
type labelValues [maxLabels]string

// desc describes a family.
type desc struct {
	name, typ, help string
	labels          []string
	order           []int // label indices by label name: the order labels are written and series sorted in
	instance        int   // index of the "instance" label, -1 if none
}

func newDesc(name, typ, help string, labels ...string) *desc {
	if len(labels) > maxLabels {
		panic("metrics: " + name + " has more than maxLabels labels")
	}
	d := &desc{name: name, typ: typ, help: help, labels: labels, instance: slices.Index(labels, "instance")}
	for i := range labels {
		d.order = append(d.order, i)
	}
	slices.SortFunc(d.order, func(a, b int) int { return strings.Compare(labels[a], labels[b]) })
	return d
}

// series is one labelled series of a family, as a scrape read it.
type series struct {
	values labelValues
	value  float64 // of a counter or gauge
	// Of a histogram: the buckets' upper bounds and cumulative counts, the
	// last +Inf; of a summary: the quantiles and their values.
	points []point
	sum    float64
	count  uint64
}

type point struct{ bound, value float64 }

// family is a desc and its series at a scrape.
type family struct {
	*desc
	series []series
}

// collector adds its families to a scrape; add may be called for the
// families it was registered with only, and at most once each.
type collector func(add func(*desc, []series))

// registry is what a scrape writes: collectors, each of families no other
// has.
type registry struct {
	mu         sync.Mutex
	names      map[string]bool
	collectors []collector

	// promhttp_metric_handler_errors_total, kept from the client library's
	// handler: encoding counts scrapes whose answer could not be written,
	// gathering the families left out or label values repaired (not UTF-8).
	encodingErrors, gatheringErrors atomic.Uint64
}

var handlerErrorsDesc = newDesc("promhttp_metric_handler_errors_total", typeCounter,
	"Total number of internal errors encountered by the promhttp metric handler.", "cause")

func newRegistry() *registry {
	r := &registry{names: map[string]bool{}}
	r.register(func(add func(*desc, []series)) {
		add(handlerErrorsDesc, []series{
			{values: labelValues{"encoding"}, value: float64(r.encodingErrors.Load())},
			{values: labelValues{"gathering"}, value: float64(r.gatheringErrors.Load())},
		})
	}, handlerErrorsDesc)
	return r
}

// register adds c, which adds the families of descs. A name registered
// twice is a programming error, and panics (at start, where clb registers).
func (r *registry) register(c collector, descs ...*desc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range descs {
		if r.names[d.name] {
			panic("metrics: " + d.name + " registered twice")
		}
		r.names[d.name] = true
	}
	r.collectors = append(r.collectors, c)
}

// gather reads every collector: the families by name, their series by
// label values (as the client library sorted them), empty families left out.
func (r *registry) gather() []family {
	r.mu.Lock()
	collectors := slices.Clone(r.collectors)
	r.mu.Unlock()
	var fams []family
	for _, c := range collectors {
		c(func(d *desc, ss []series) {
			if len(ss) == 0 {
				return
			}
			slices.SortFunc(ss, func(a, b series) int {
				for _, i := range d.order {
					if c := strings.Compare(a.values[i], b.values[i]); c != 0 {
						return c
					}
				}
				return 0
			})
			fams = append(fams, family{d, ss})
		})
	}
	slices.SortFunc(fams, func(a, b family) int { return strings.Compare(a.name, b.name) })
	return fams
}

// ServeHTTP answers a scrape in the text format, gzipped when the scraper
// accepts it (Prometheus does).
func (r *registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	tp := scrapeTexts.Get().(*[]byte)
	b := (*tp)[:0]
	for _, f := range r.gather() {
		b = r.appendFamily(b, f)
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Add("Vary", "Accept-Encoding")
	var err error
	if acceptsGzip(req.Header.Values("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		gz := gzipWriters.Get().(*gzip.Writer)
		gz.Reset(w)
		if _, err = gz.Write(b); err == nil {
			err = gz.Close()
		}
		gz.Reset(nil) // kept without w
		gzipWriters.Put(gz)
	} else {
		h.Set("Content-Length", strconv.Itoa(len(b)))
		_, err = w.Write(b)
	}
	if err != nil {
		r.encodingErrors.Add(1)
	}
	if cap(b) <= maxKeptText {
		*tp = b
		scrapeTexts.Put(tp)
	}
}

// A scrape's text buffer and gzip writer are reused by the next: scrapes
// come every few seconds for as long as clb runs, and a new buffer and
// compressor each time were most of what a steady clb allocated (its
// requests and calls allocate nothing), growing its heap between
// collections. Pools rather than one of each behind a lock: a scraper that
// reads slowly must not hold up the others.
var (
	scrapeTexts = sync.Pool{New: func() any { return new([]byte) }}
	// BestSpeed: its compressor is a small fraction of the default
	// level's, and the text still shrinks several times.
	gzipWriters = sync.Pool{New: func() any {
		gz, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
		return gz
	}}
)

// maxKeptText is the largest scrape text kept for the next scrape: a
// table of many instances is written into a new buffer each time rather
// than pinning its size.
const maxKeptText = 1 << 20

// acceptsGzip tells whether Accept-Encoding values offer gzip (not with q=0).
func acceptsGzip(values []string) bool {
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(item, ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			q, ok := strings.CutPrefix(strings.TrimSpace(params), "q=")
			if f, err := strconv.ParseFloat(q, 64); !ok || err == nil && f > 0 {
				return true
			}
		}
	}
	return false
}

// appendFamily appends f in the text format: HELP, TYPE, then each series'
// samples, labels in name order.
func (r *registry) appendFamily(b []byte, f family) []byte {
	b = append(b, "# HELP "...)
	b = append(b, f.name...)
	b = append(b, ' ')
	b = appendEscaped(b, f.help, false)
	b = append(b, "\n# TYPE "...)
	b = append(b, f.name...)
	b = append(b, ' ')
	b = append(b, f.typ...)
	b = append(b, '\n')
	for i := range f.series {
		s := &f.series[i]
		switch f.typ {
		case typeHistogram, typeSummary:
			suffix, extra := "", "quantile"
			if f.typ == typeHistogram {
				suffix, extra = "_bucket", "le"
			}
			for _, p := range s.points {
				b = r.appendSample(b, f.desc, suffix, s, extra, p.bound, p.value)
			}
			b = r.appendSample(b, f.desc, "_sum", s, "", 0, s.sum)
			b = r.appendSample(b, f.desc, "_count", s, "", 0, float64(s.count))
		default:
			b = r.appendSample(b, f.desc, "", s, "", 0, s.value)
		}
	}
	return b
}

// appendSample appends one line: name and suffix, s's labels and, if
// extra is not "", the label extra="bound", then v.
func (r *registry) appendSample(b []byte, d *desc, suffix string, s *series, extra string, bound, v float64) []byte {
	b = append(b, d.name...)
	b = append(b, suffix...)
	if len(d.labels) > 0 || extra != "" {
		b = append(b, '{')
		for n, i := range d.order {
			if n > 0 {
				b = append(b, ',')
			}
			b = r.appendLabel(b, d.labels[i], s.values[i])
		}
		if extra != "" {
			if len(d.labels) > 0 {
				b = append(b, ',')
			}
			b = append(b, extra...)
			b = append(b, `="`...)
			b = appendFloat(b, bound)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = appendFloat(b, v)
	return append(b, '\n')
}

// appendLabel appends name="value", value escaped; a value not UTF-8 (which
// a parser refuses) is written with U+FFFD for its bad bytes, and counted.
func (r *registry) appendLabel(b []byte, name, value string) []byte {
	if !utf8.ValidString(value) {
		r.gatheringErrors.Add(1)
		value = strings.ToValidUTF8(value, "\uFFFD")
	}
	b = append(b, name...)
	b = append(b, `="`...)
	b = appendEscaped(b, value, true)
	return append(b, '"')
}

// appendEscaped appends s with backslash and line feed escaped, and the
// double quote too in a label value (the format's two escapings).
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendFloat writes v as Go's shortest representation, +Inf, -Inf or NaN,
// as the client library did.
func appendFloat(b []byte, v float64) []byte {
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// vec is a family's series, each created at its first use.
type vec[T any] struct {
	*desc
	mu     sync.Mutex
	series map[labelValues]*T
	new    func() *T
}

// with is the series of values, created if new.
func (v *vec[T]) with(values labelValues) *T {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.series[values]
	if !ok {
		s = v.new()
		v.series[values] = s
	}
	return s
}

// deleteInstance drops the series labelled with instance name.
func (v *vec[T]) deleteInstance(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k := range v.series {
		if k[v.instance] == name {
			delete(v.series, k)
		}
	}
}

// each calls f with every series, holding the lock: f only reads.
func (v *vec[T]) each(f func(labelValues, *T)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, s := range v.series {
		f(k, s)
	}
}

// counterVec is a counter family.
type counterVec struct{ vec[atomic.Uint64] }

func newCounterVec(r *registry, name, help string, labels ...string) *counterVec {
	v := &counterVec{vec[atomic.Uint64]{desc: newDesc(name, typeCounter, help, labels...),
		series: map[labelValues]*atomic.Uint64{}, new: func() *atomic.Uint64 { return new(atomic.Uint64) }}}
	r.register(v.collect, v.desc)
	return v
}

func (v *counterVec) collect(add func(*desc, []series)) {
	var ss []series
	v.each(func(k labelValues, c *atomic.Uint64) { ss = append(ss, series{values: k, value: float64(c.Load())}) })
	add(v.desc, ss)
}

// histogramVec is a histogram family.
type histogramVec struct {
	vec[histogram]
	bounds []float64 // the buckets' upper bounds, ascending, without +Inf
}

// histogram is one series: lock-free, so that observing takes no lock. A
// scrape reads each bucket once and writes the sum of the buckets as the
// count, so the buckets are cumulative and +Inf is the count; the sum may
// miss an observation that is being made.
type histogram struct {
	counts []atomic.Uint64 // per bucket, not cumulative; the last +Inf
	sum    atomic.Uint64   // float64 bits
}

func newHistogramVec(r *registry, name, help string, bounds []float64, labels ...string) *histogramVec {
	v := &histogramVec{vec[histogram]{desc: newDesc(name, typeHistogram, help, labels...), series: map[labelValues]*histogram{},
		new: func() *histogram { return &histogram{counts: make([]atomic.Uint64, len(bounds)+1)} }}, bounds}
	r.register(v.collect, v.desc)
	return v
}

// observe counts x into h, whose bucket bounds are bounds.
func (h *histogram) observe(bounds []float64, x float64) {
	i, _ := slices.BinarySearch(bounds, x) // the first bound ≥ x: le is inclusive
	h.counts[i].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+x)) {
			return
		}
	}
}

func (v *histogramVec) collect(add func(*desc, []series)) {
	var ss []series
	v.each(func(k labelValues, h *histogram) {
		s := series{values: k, points: make([]point, len(h.counts)), sum: math.Float64frombits(h.sum.Load())}
		for i := range h.counts {
			s.count += h.counts[i].Load()
			bound := math.Inf(1)
			if i < len(v.bounds) {
				bound = v.bounds[i]
			}
			s.points[i] = point{bound, float64(s.count)}
		}
		ss = append(ss, s)
	})
	add(v.desc, ss)
}

// gaugeFunc registers a gauge without labels, read from f at each scrape.
func gaugeFunc(r *registry, name, help string, f func() float64) {
	d := newDesc(name, typeGauge, help)
	r.register(func(add func(*desc, []series)) { add(d, []series{{value: f()}}) }, d)
}
