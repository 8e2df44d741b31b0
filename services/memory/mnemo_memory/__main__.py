"""`python -m mnemo_memory`: run the memory service."""

from mnemo_core.server import main
from mnemo_memory.app import build
from mnemo_memory.settings import MemorySettings

if __name__ == "__main__":
    main(MemorySettings, build)
