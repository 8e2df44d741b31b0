"""Cross-cutting code shared by every mnemo service: one way to do each thing."""
