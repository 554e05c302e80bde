"""Offline kernel dumps as a gdbext backend: QEMU and /proc/vmcore ELF, kdump, LiME, raw."""
