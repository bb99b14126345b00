//go:build !linux

package hashing

// slotMemory returns n zeroed words for a slot table.
func slotMemory[W uint16 | uint32](_ *Table, n int) []W { return make([]W, n) }
