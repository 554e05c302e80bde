"""The plugin host: hook specifications, the host that loads plugins, and the targets they open."""
