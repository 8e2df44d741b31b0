"""mnemo: the Python package of the mnemo API (generated gRPC stubs) and the `mnemo` command."""
