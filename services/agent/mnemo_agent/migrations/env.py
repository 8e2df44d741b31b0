from mnemo_agent.models import AgentBase
from mnemo_core.migrations import run_env

run_env(AgentBase.metadata)
