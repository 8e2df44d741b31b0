from mnemo_core.migrations import run_env
from mnemo_tools.models import ToolsBase

run_env(ToolsBase.metadata)
