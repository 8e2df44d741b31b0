"""`python -m mnemo_agent`: run the agent service."""

from mnemo_agent.app import build
from mnemo_agent.settings import AgentSettings
from mnemo_core.server import main

if __name__ == "__main__":
    main(AgentSettings, build)
