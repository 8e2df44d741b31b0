"""The memory service's gRPC servicers, one per file: proto <-> domain, nothing else."""
