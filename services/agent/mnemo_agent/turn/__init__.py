"""One turn of an agent.

Each step compiles the system prompt from core memory, fits the context into the model's window
(summarizing when needed), calls the model with the agent's tools, runs the tools it asked for
(concurrently when it asks for several), and stores the step's messages in one atomic batch (a tool
call together with its return). Every turn is a run; a turn retried with the same idempotency key
returns the first result, or resumes an interrupted run from its last stored step.

- `turns`: the entry points (send, stream, approve, cancel, ephemeral turns, summaries);
- `lifecycle`: a run around the loop (locks, lease, cancel watch, replay, resume, outcome);
  `background`: runs nobody waits for (async sends, batches, restarts);
- `loop`: the steps; `context`: fitting a step into the window; `dispatch`: running tool calls;
  `model_calls`: the model call of a step (batch, streamed, whole);
- `state`, `events`, `request`: the turn's state, what it reports, what it is asked;
- `ports`: what a turn needs of memory, tools and the model (`mesh_ports` over the mesh);
  `recorders` and `caches`: where messages go, what is kept between turns.
"""

from mnemo_agent.turn.events import MessagesStored, RunStarted, Sink, TokenDelta, TurnEvent, TurnResult
from mnemo_agent.turn.request import Decision, TurnRequest, TurnSettings, check_inputs
from mnemo_agent.turn.state import AgentConfig
from mnemo_agent.turn.turns import Turns

__all__ = [
    "AgentConfig",
    "Decision",
    "MessagesStored",
    "RunStarted",
    "Sink",
    "TokenDelta",
    "TurnEvent",
    "TurnRequest",
    "TurnResult",
    "TurnSettings",
    "Turns",
    "check_inputs",
]
