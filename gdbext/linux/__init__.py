"""What gdbext knows of Linux: its memory layout, ptdump walk, boot parameters and VMCOREINFO."""
