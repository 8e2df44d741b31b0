"""mnemo agent service: agents, runs and the step loop."""
