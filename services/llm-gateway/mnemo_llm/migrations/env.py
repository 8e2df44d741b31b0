from mnemo_core.migrations import run_env
from mnemo_llm.models import LlmBase

run_env(LlmBase.metadata)
