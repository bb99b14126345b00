//go:build !linux

package hashing

// slotMemory returns n zeroed words for a slot table.
func slotMemory(_ *Table, n int) []uint64 { return make([]uint64, n) }
