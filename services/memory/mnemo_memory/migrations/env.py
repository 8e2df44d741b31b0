from mnemo_core.migrations import run_env
from mnemo_memory.models import MemoryBase

run_env(MemoryBase.metadata)
