"""mnemo tools service: the tool registry, custom Python tools run in a sandbox, and MCP servers."""
