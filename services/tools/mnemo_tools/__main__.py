"""`python -m mnemo_tools`: run the tools service."""

from mnemo_core.server import main
from mnemo_tools.app import build
from mnemo_tools.settings import ToolsSettings

if __name__ == "__main__":
    main(ToolsSettings, build)
