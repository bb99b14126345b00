package metrics

import (
	"bytes"
	"os"

	"golang.org/x/sys/unix"
)

// countFDs counts the open file descriptors (the one reading them too, as
// the client library did), reading the directory's entries in batches into
// one buffer and counting them where they lie: a name per descriptor would
// be an allocation per connection at every scrape.
func countFDs() (int, error) {
	fd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: "/proc/self/fd", Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 16<<10)
	n := 0
	for {
		got, err := unix.ReadDirent(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "getdents", Path: "/proc/self/fd", Err: err}
		}
		if got <= 0 {
			return n, nil
		}
		c, ok := countDirents(buf[:got])
		if !ok {
			return 0, errProcFormat
		}
		n += c
	}
}

// countDirents counts the linux_dirent64 records in b, "." and ".." left
// out; false if a record's length does not fit.
func countDirents(b []byte) (int, bool) {
	const nameOff = 19 // d_ino 8, d_off 8, d_reclen 2, d_type 1
	n := 0
	for len(b) > 0 {
		if len(b) < nameOff+1 {
			return 0, false
		}
		reclen := int(b[16]) | int(b[17])<<8 // little-endian on every Linux clb is built for
		if reclen < nameOff+1 || reclen > len(b) {
			return 0, false
		}
		name := b[nameOff:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if string(name) != "." && string(name) != ".." {
			n++
		}
		b = b[reclen:]
	}
	return n, true
}
