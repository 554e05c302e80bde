"""gdbext's in-memory simulator backend: sparse RAM, a frame allocator, a modelled TLB,
scenario files, and a writer of QEMU-format ELF cores."""
