"""mnemo memory service: core memory blocks, message history and context windows."""
