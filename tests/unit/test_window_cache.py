"""The agent service's cache of context windows: bounded by agents and by bytes, least recently used first."""

from __future__ import annotations

from mnemo.common.v1 import message_pb2
from mnemo_agent.conversation import ChatHistory
from mnemo_agent.turn.caches import WindowCache


def window(n: int, text: str = "x" * 100) -> list[message_pb2.Message]:
    return [message_pb2.Message(id=f"m{i}", user=message_pb2.UserContent(text=text)) for i in range(n)]


def test_the_least_recently_used_windows_go_when_the_bytes_pass_the_bound() -> None:
    one = window(10)
    size = sum(m.ByteSize() for m in one)
    cache = WindowCache(enabled=True, max_bytes=3 * size)
    for agent in ("a", "b", "c"):
        cache.put(agent, window(10), 10, ChatHistory())
    assert cache.get("a") is not None  # now the most recently used

    cache.put("d", window(10), 10, ChatHistory())

    assert cache.get("b") is None
    assert [cache.get(agent) is not None for agent in ("a", "c", "d")] == [True, True, True]
    assert cache.bytes == 3 * size


def test_a_growing_window_is_measured_by_what_changed_and_a_window_beyond_the_bound_is_not_kept() -> None:
    messages = window(10)
    size = sum(m.ByteSize() for m in messages)
    cache = WindowCache(enabled=True, max_bytes=int(2.5 * size))
    cache.put("a", messages, 10, ChatHistory())
    grown = [*messages[3:], *window(5, "y" * 100)]  # a summary dropped three, a turn added five

    cache.put("a", grown, 12, ChatHistory())

    assert cache.bytes == sum(m.ByteSize() for m in grown)
    cache.put("a", [*grown, *window(20)], 32, ChatHistory())
    assert cache.get("a") is None
    assert cache.bytes == 0
    assert len(cache) == 0


def test_the_agent_bound_still_holds_and_drop_forgets_the_bytes() -> None:
    cache = WindowCache(enabled=True, agents=2)
    for agent in ("a", "b", "c"):
        cache.put(agent, window(3), 3, ChatHistory())

    assert cache.get("a") is None
    cache.drop("b")
    cache.drop("b")
    assert len(cache) == 1
    assert cache.bytes == sum(m.ByteSize() for m in window(3))
