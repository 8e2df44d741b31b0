"""`python -m mnemo_llm`: run the llm-gateway service."""

from mnemo_core.server import main
from mnemo_llm.app import build
from mnemo_llm.settings import LlmSettings

if __name__ == "__main__":
    main(LlmSettings, build)
