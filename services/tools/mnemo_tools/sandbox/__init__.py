"""The sandbox custom tools run in: a fork server (forkserver.py) and its client in the service (runner.py)."""
