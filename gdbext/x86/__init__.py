"""The x86-64 paging engine: entries, tables, walks and their changes; nothing Linux-specific."""
