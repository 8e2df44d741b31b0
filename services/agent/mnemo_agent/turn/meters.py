"""The turn's metrics: turns by outcome and their duration, steps, the runs this process holds (their
leases) and the extensions of those leases."""

from __future__ import annotations

from mnemo_core.metrics import duration_histogram, meter

_meter = meter("mnemo.agent")
turns = _meter.create_counter(
    "mnemo.agent.turns", unit="{turn}", description="Turns ended, by run status and stop reason."
)
turn_duration = duration_histogram(_meter, "mnemo.agent.turn.duration", "Duration of turns, by run status.")
steps = _meter.create_counter("mnemo.agent.steps", unit="{step}", description="Steps (model calls) of turns.")
runs_held = _meter.create_up_down_counter(
    "mnemo.agent.runs.held", unit="{run}", description="Runs this process executes: the leases it holds."
)
lease_extensions = _meter.create_counter(
    "mnemo.agent.run_lease.extensions", unit="{extension}", description="Lease extensions, by outcome."
)
