"""mnemo llm-gateway: the only door to model providers."""
