"""mnemo_server: runs the whole mesh on one machine (the supervisor) and adds `mnemo server` to the `mnemo` command."""
