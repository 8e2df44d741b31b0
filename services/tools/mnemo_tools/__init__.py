"""mnemo tools service: the tool registry (and, later, sandboxed execution and MCP)."""
