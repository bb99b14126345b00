package metrics

import (
	"os"
	"strings"
	"testing"
)

// TestCountFDs: the count follows descriptors opened and closed, agrees
// with the directory's names (as read before), and costs one allocation
// however many there are, not one a descriptor.
func TestCountFDs(t *testing.T) {
	before, err := countFDs()
	if err != nil {
		t.Fatal(err)
	}
	files := openFiles(t, 300)
	n, err := countFDs()
	if err != nil {
		t.Fatal(err)
	}
	if n != before+len(files) {
		t.Errorf("%d descriptors with %d opened, want %d", n, len(files), before+len(files))
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != n { // each counts the one it reads with
		t.Errorf("counted %d, the directory names %d", n, len(names))
	}
	if allocs := testing.AllocsPerRun(20, func() { _, _ = countFDs() }); allocs > 1 {
		t.Errorf("%v allocations a count of %d descriptors, want 1 (the buffer)", allocs, n)
	}
	closeFiles(files)
	if n, err := countFDs(); err != nil || n != before {
		t.Errorf("after closing them: %d (%v), want %d", n, err, before)
	}
}

// TestCountDirents: records that do not fit are refused, not read past.
func TestCountDirents(t *testing.T) {
	rec := func(name string, reclen int) []byte {
		b := make([]byte, reclen)
		b[16], b[17] = byte(reclen), byte(reclen>>8)
		copy(b[19:], name)
		return b
	}
	ok := append(append(rec(".", 24), rec("..", 24)...), rec("12", 24)...)
	if n, good := countDirents(ok); !good || n != 1 {
		t.Errorf("., .. and 12: %d (%v), want 1", n, good)
	}
	for name, b := range map[string][]byte{
		"short":           ok[:10],
		"reclen too long": rec("3", 24)[:20],
		"reclen zero":     append(rec("3", 24)[:16], make([]byte, 8)...),
	} {
		if _, good := countDirents(b); good {
			t.Errorf("%s: counted", name)
		}
	}
}

// TestReadProc: a file read into a kept buffer whole, however small the
// buffer it starts with, and the next read into the same buffer.
func TestReadProc(t *testing.T) {
	want, err := os.ReadFile("/proc/self/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []int{0, 1, 100} {
		buf := make([]byte, 0, start)
		got, err := readProc("/proc/self/net/netstat", &buf)
		if err != nil {
			t.Fatal(err)
		}
		// The file's counters move between the reads: compare its lines'
		// names, the first field of each.
		if names(got) != names(string(want)) {
			t.Errorf("buffer of %d at first: read %d bytes, lines %q, want %q", start, len(got), names(got), names(string(want)))
		}
		limits, err := readProc("/proc/self/limits", &buf)
		if err != nil || !strings.HasPrefix(limits, "Limit") {
			t.Errorf("second read into the same buffer: %.20q (%v)", limits, err)
		}
	}
	if _, err := readProc("/proc/self/no-such-file", new([]byte)); err == nil {
		t.Error("a missing file read without an error")
	}
}

func names(text string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		f, _, _ := strings.Cut(line, " ")
		b.WriteString(f)
	}
	return b.String()
}
