"""The tools service's gRPC servicers, one per file: proto <-> domain, nothing else."""
