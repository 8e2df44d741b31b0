"""mnemo REST gateway: FastAPI in front of the gRPC mesh."""
