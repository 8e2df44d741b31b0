"""The `mnemo` command as a user runs it: the installed script in a subprocess against the whole mesh, and in
a pseudo-terminal for the chat REPL and the progress bars."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemo.client import Mnemo
from tests.fakes.llm_provider import FakeProvider, reply, streamed, tool_call
from tests.harness import RunningMesh

MNEMO = str(Path(sys.executable).with_name("mnemo"))
# Each test starts the command a dozen times, each a new Python process: slow on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(300)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def mnemo_env(mesh: RunningMesh) -> dict[str, str]:
    return {
        **os.environ,
        "MNEMO_BASE_URL": mesh.http_url,
        "MNEMO_API_KEY": mesh.api_key,
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }


def run(
    mesh: RunningMesh, *args: str, ok: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [MNEMO, *args],
        env=mnemo_env(mesh),
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        check=False,
    )
    if ok:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def run_json(mesh: RunningMesh, *args: str) -> Any:
    return json.loads(run(mesh, *args, "--json").stdout)


class Terminal:
    """A command in a pseudo-terminal (120 columns), read as plain text with ANSI sequences removed."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.fd, child = os.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.process = subprocess.Popen(
            argv, stdin=child, stdout=child, stderr=child, env=env | {"TERM": "xterm"}, start_new_session=True
        )
        os.close(child)
        self.output = ""

    def read_until(self, text: str, timeout: float = 60.0) -> str:
        """Everything read so far once `text` has appeared after the previous mark; fails after timeout."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not seen in:\n{self.output[-2000:]}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the command ended
                    chunk = b""
                if not chunk:
                    assert text in self.output, f"ended before {text!r}:\n{self.output[-2000:]}"
                    break
                self.output += ANSI.sub("", chunk.decode(errors="replace"))
        return self.output

    def consume(self) -> str:
        """What was read, from now on forgotten."""
        seen, self.output = self.output, ""
        return seen

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def wait(self, timeout: float = 30.0) -> int:
        self.read_rest(timeout)
        return self.process.wait(timeout)

    def read_rest(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                self.output += ANSI.sub("", chunk.decode(errors="replace"))
            elif self.process.poll() is not None:
                return

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.fd)


@pytest.fixture
def client(mesh: RunningMesh) -> Iterator[Mnemo]:
    with Mnemo(mesh.http_url, mesh.api_key) as client:
        yield client


def test_agents_create_list_show_export_import_and_delete(mesh: RunningMesh, tmp_path: Path) -> None:
    tag = f"cli-{uuid.uuid4().hex[:6]}"
    agent_id = run(
        mesh,
        "agents",
        "create",
        "cli-agent",
        "--model",
        "openai/gpt-4o-mini",
        "--persona",
        "Terse.",
        "--tag",
        tag,
    ).stdout.strip()
    assert agent_id.startswith("agent-")

    listed = run_json(mesh, "agents", "list", "--tag", tag)
    assert [(a["id"], a["name"]) for a in listed] == [(agent_id, "cli-agent")]
    table = run(mesh, "agents", "list", "--tag", tag).stdout
    assert agent_id in table
    assert "persona, human" in table

    shown = run(mesh, "agents", "show", agent_id).stdout
    assert "cli-agent" in shown
    assert "Terse." in shown
    assert "core_memory_append" in shown
    assert {t["name"] for t in run_json(mesh, "agents", "show", agent_id)["tools"]} >= {"core_memory_append"}

    exported = tmp_path / "agent.json"
    run(mesh, "agents", "export", agent_id, "-o", str(exported))
    copy_id = run(mesh, "agents", "import", str(exported)).stdout.strip()
    assert copy_id not in ("", agent_id)
    assert run_json(mesh, "agents", "show", copy_id)["blocks"][0]["value"] == "Terse."

    assert run(mesh, "agents", "delete", agent_id).stdout.strip() == f"deleted {agent_id}"
    unreachable = run(mesh, "agents", "list", "--url", "http://127.0.0.1:9", ok=False)
    assert unreachable.returncode == 1
    assert "mnemo: cannot reach http://127.0.0.1:9" in unreachable.stderr
    missing = run(mesh, "agents", "show", agent_id, ok=False)
    assert missing.returncode == 1
    assert "404" in missing.stderr


def test_tools_add_list_and_run(mesh: RunningMesh, tmp_path: Path) -> None:
    name = f"shout_{uuid.uuid4().hex[:6]}"
    source = tmp_path / "shout.py"
    source.write_text(
        textwrap.dedent(
            f'''
            def {name}(text: str, times: int = 1) -> str:
                """Shouts.

                Args:
                    text: What to shout.
                    times: How often.
                """
                print("shouting")
                return (text.upper() + "! ") * times
            '''
        )
    )

    added = run(mesh, "tools", "add", str(source), "--tag", "cli").stdout.split()
    assert added[1] == name
    assert name in {t["name"] for t in run_json(mesh, "tools", "list", "--type", "custom")}

    result = run_json(mesh, "tools", "run", name, "--arg", "text=hey", "--arg", "times=2")
    assert (result["status"], result["content"]) == ("success", "HEY! HEY! ")
    shown = run(mesh, "tools", "run", added[0], "--args", '{"text": "yo"}').stdout
    assert "YO!" in shown
    assert "shouting" in shown
    failed = run(mesh, "tools", "run", name, "--args", '{"times": 2}', ok=False)
    assert failed.returncode == 1
    unknown = run(mesh, "tools", "run", "no_such_tool_anywhere", ok=False)
    assert "no tool with the id or name" in unknown.stderr


def test_sources_upload_reports_jobs_for_scripts(mesh: RunningMesh, tmp_path: Path) -> None:
    source_id = run(mesh, "sources", "create", f"docs-{uuid.uuid4().hex[:6]}").stdout.strip()
    first, second = tmp_path / "a.md", tmp_path / "b.txt"
    first.write_text("Releases ship on Fridays. " * 200)
    second.write_text("The office is closed on Mondays.")

    jobs = run_json(mesh, "sources", "upload", source_id, str(first), str(second))

    assert [j["status"] for j in jobs] == ["completed", "completed"]
    assert all(j["chunks_done"] >= 1 for j in jobs)
    missing = run(mesh, "sources", "upload", source_id, str(tmp_path / "none.md"), ok=False)
    assert "no such file" in missing.stderr


def test_sources_upload_draws_byte_then_processing_progress_bars_in_a_terminal(
    mesh: RunningMesh, tmp_path: Path
) -> None:
    source_id = run(mesh, "sources", "create", f"bars-{uuid.uuid4().hex[:6]}").stdout.strip()
    big = tmp_path / "big.md"
    big.write_text("Backups run nightly at two. " * 40000)  # ~1.1 MB

    terminal = Terminal([MNEMO, "sources", "upload", source_id, str(big)], mnemo_env(mesh))
    try:
        assert terminal.wait(120) == 0, terminal.output
    finally:
        terminal.close()

    screen = terminal.output
    assert "upload  big.md" in screen
    assert re.search(r"1\.1/1\.1 MB", screen), screen
    assert "process big.md" in screen
    assert re.search(r"(\d+)/\1 chunks", screen), screen
    assert screen.index("upload  big.md") < screen.index("process big.md")
    assert "big.md: file-" in screen
    assert "completed" in screen


def test_keys_users_orgs_usage_and_models(mesh: RunningMesh, client: Mnemo, llm: FakeProvider) -> None:
    org_id = run(mesh, "orgs", "create", f"cli-org-{uuid.uuid4().hex[:6]}").stdout.strip()
    assert org_id in {o["id"] for o in run_json(mesh, "orgs", "list")}
    user_id = run(mesh, "users", "create", "cli-user", "--org", org_id).stdout.strip()
    assert [u["id"] for u in run_json(mesh, "users", "list", "--org", org_id)] == [user_id]

    created = run(mesh, "keys", "create", "cli-key", "--role", "admin", "--user", user_id, "--org", org_id)
    secret = created.stdout.strip()
    key_id = created.stderr.split()[0]
    assert [k["id"] for k in run_json(mesh, "keys", "list", "--org", org_id)] == [key_id]
    with Mnemo(mesh.http_url, secret) as as_new_admin:
        assert [u.id for u in as_new_admin.users.list()] == [user_id]
    assert run(mesh, "keys", "revoke", key_id, "--org", org_id).stdout.strip() == f"revoked {key_id}"
    assert run_json(mesh, "keys", "list", "--org", org_id) == []
    run(mesh, "users", "delete", user_id, "--org", org_id)
    run(mesh, "orgs", "delete", org_id)
    assert org_id not in {o["id"] for o in run_json(mesh, "orgs", "list")}

    agent = client.agents.create(name="cli-usage", model="openai/gpt-4o-mini")
    llm.script(reply("Hi.", prompt_tokens=55, completion_tokens=4))
    client.messages.send(agent.id, "hello")
    rows = run_json(mesh, "usage", "--by", "agent", "--agent", agent.id)
    assert [(r["agent_id"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(agent.id, 55, 4)]
    assert agent.id in run(mesh, "usage", "--by", "agent", "--by", "model", "--agent", agent.id).stdout
    assert "openai/gpt-4o-mini" in run(mesh, "models").stdout
    assert run(mesh, "usage", "--by", "week", ok=False).returncode == 1


def test_chat_repl_streams_tokens_shows_tool_calls_memory_and_archival_search(
    mesh: RunningMesh, client: Mnemo, llm: FakeProvider
) -> None:
    agent = client.agents.create(
        name="cli-chat",
        model="openai/gpt-4o-mini",
        memory_blocks=[{"label": "persona", "value": "Kind."}, {"label": "human", "value": ""}],
    )
    client.archival.insert(agent.id, "Ada's favourite language is OCaml.")
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "Name: Ada"}),
        streamed(reply("Nice to meet you, Ada!"), pieces=3, chunk_delay=0.5),
    )

    terminal = Terminal([MNEMO, "chat", agent.id], mnemo_env(mesh))
    try:
        terminal.read_until("you>")
        terminal.consume()
        terminal.send("my name is Ada")
        first_piece = terminal.read_until("Nice to ")
        assert "Ada!" not in first_piece  # the reply is shown while it is being written
        turn = terminal.read_until("you>")
        assert '-> core_memory_append({"label": "human", "content": "Name: Ada"})' in turn
        assert "<- " in turn
        assert "cli-chat> Nice to meet you, Ada!" in turn
        terminal.consume()

        terminal.send("/memory")
        memory = terminal.read_until("you>")
        assert "human" in memory
        assert "Name: Ada" in memory
        assert "Kind." in memory
        terminal.consume()

        terminal.send("/archival favourite language")
        assert "OCaml" in terminal.read_until("you>")
        terminal.consume()

        terminal.send("/archival")
        assert "usage: /archival QUERY" in terminal.read_until("you>")
        terminal.consume()

        terminal.send("/exit")
        assert terminal.wait() == 0
    finally:
        terminal.close()
    assert client.blocks.get(agent.id, "human").value == "Name: Ada"
