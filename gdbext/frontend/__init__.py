"""The commands, declared once, and what the command line, GDB and LLDB share in running them."""
