//go:build !linux

package hashing

// slotMemory returns n zeroed words for a slot table.
func slotMemory(_ *Table, n int) []uint32 { return make([]uint32, n) }
