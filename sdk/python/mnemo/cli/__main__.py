"""`python -m mnemo.cli`: the `mnemo` command."""

from mnemo.cli import main

main()
