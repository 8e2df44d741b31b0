"""The web console at /ui, driven in headless Chromium (Playwright with Debian's chromium) against a real mesh.

Screenshots go to $MNEMO_CONSOLE_SCREENSHOTS when set (docs/console/ was made that way), else to a
temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, Request, async_playwright, expect

from tests.fakes.llm_provider import FakeProvider, reply, streamed, tool_call
from tests.harness import RunningMesh

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


def _chromium() -> str:
    path = os.environ.get("MNEMO_CHROMIUM") or shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return path


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=_chromium(), headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        await launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MNEMO_CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Visit:
    """A page of the console, with every request it makes outside the gateway and every script error."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.foreign: list[str] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        self._origin = origin

    def _request(self, request: Request) -> None:
        if not request.url.startswith(self._origin):
            self.foreign.append(request.url)


@pytest.fixture
async def visit(browser: Browser, mesh: RunningMesh) -> AsyncIterator[Visit]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(20_000)
    yield Visit(page, mesh.http_url)
    await context.close()


async def test_the_console_is_static_files_with_a_strict_policy_and_no_key(mesh: RunningMesh) -> None:
    async with httpx.AsyncClient(base_url=mesh.http_url) as client:
        root = await client.get("/ui")
        page = await client.get("/ui/")
        script = await client.get("/ui/console.js")
    assert root.status_code == 307
    assert root.headers["location"] == "/ui/"
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "http://" not in page.text
    assert "https://" not in page.text


async def test_console_signs_in_creates_an_agent_and_chats_with_streamed_tokens_and_live_memory(
    mesh: RunningMesh, llm: FakeProvider, visit: Visit, shots: Path
) -> None:
    page = visit.page
    await page.goto(f"{mesh.http_url}/ui")
    await page.fill("input[name=key]", "not-a-key-0123456789")
    await page.click("#sign-in-form button")
    await expect(page.locator("#sign-in-error")).to_contain_text("API_KEY_INVALID")
    await page.screenshot(path=shots / "console-sign-in.png")

    await page.fill("input[name=key]", mesh.api_key)
    await page.click("#sign-in-form button")
    await expect(page.locator("#agents-pane")).to_be_visible()

    await page.click("#create-agent summary")
    await page.fill("#create-agent-form input[name=name]", "console-agent")
    await page.select_option("#create-agent-form select[name=model]", "openai/gpt-4o-mini")
    await page.fill("#create-agent-form textarea[name=persona]", "I am a friendly assistant.")
    await page.click("#create-agent-form button")
    await expect(page.locator("#agent-title")).to_have_text("console-agent")
    await expect(page.locator(".agent.selected")).to_contain_text("console-agent")
    await expect(page.locator('.block[data-label="human"] pre')).to_have_text("(empty)")

    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "Name: Ada"}),
        streamed(reply("Nice to meet you, Ada. I will remember your name."), pieces=6, chunk_delay=0.25),
    )
    await page.fill("#chat-form input[name=text]", "Hi, I'm Ada.")
    await page.click("#chat-form button")

    # Tokens arrive while the step is still running, and the memory block already shows the agent's edit.
    streaming = page.locator(".assistant.streaming")
    await expect(streaming).to_be_visible()
    partial = await streaming.text_content()
    assert partial
    assert partial != "Nice to meet you, Ada. I will remember your name."
    human = page.locator('.block[data-label="human"]')
    await expect(human.locator("pre")).to_have_text("Name: Ada")
    await expect(human).to_have_class(re.compile(r"\bchanged\b"))
    await page.screenshot(path=shots / "console-chat-streaming.png")

    final = page.locator(".assistant", has_text="I will remember your name.")
    await expect(final).not_to_have_class(re.compile(r"\bstreaming\b"))
    await expect(page.locator(".tool-call").last).to_contain_text('core_memory_append({"label": "human"')
    await expect(page.locator(".tool-return").last).to_contain_text("Appended to block 'human'")
    await expect(page.locator(".step .timing").first).to_have_text(re.compile(r"· \d+ ms"))
    await expect(page.locator(".outcome").first).to_contain_text("turn ended: end_turn")
    await expect(page.locator(".outcome").last).to_contain_text("2 steps")
    await page.screenshot(path=shots / "console-chat.png")

    # Archival memory: insert, then search by meaning and words.
    await page.click('#nav button[data-view="archival"]')
    await page.fill("#archival-insert-form input[name=text]", "Ada drinks Earl Grey with lemon.")
    await page.click("#archival-insert-form button")
    await expect(page.locator("#archival-insert-form input[name=text]")).to_have_value("")
    await page.fill("#archival-search-form input[name=query]", "which tea does Ada like")
    await page.click("#archival-search-form button")
    await expect(page.locator("#archival-results li").first).to_contain_text(
        "Ada drinks Earl Grey with lemon."
    )
    await page.screenshot(path=shots / "console-archival.png")

    # The turn's run, and the organization's usage.
    await page.click('#nav button[data-view="runs"]')
    run = page.locator("#runs tr").first
    await expect(run).to_contain_text("completed")
    await expect(run).to_contain_text("end_turn")
    await expect(run.locator("td").nth(3)).to_have_text("2")
    await run.locator("button.link").click()
    detail = page.locator("#run-detail")
    await expect(detail.locator(".step")).to_have_count(2)
    await expect(detail.locator(".step").first).to_contain_text("core_memory_append")
    await expect(detail.locator(".step-header").first).to_have_text(re.compile(r"step 1 · \d+ ms"))
    await expect(detail.locator(".step").last).to_contain_text("I will remember your name.")
    await page.screenshot(path=shots / "console-runs.png")
    await page.click('#nav button[data-view="usage"]')
    await expect(page.locator("#usage tr", has_text="openai/gpt-4o-mini")).to_be_visible()
    await page.screenshot(path=shots / "console-usage.png")

    assert visit.foreign == []
    assert visit.errors == []


async def test_console_shows_a_failed_turn_with_its_reason(
    mesh: RunningMesh, llm: FakeProvider, visit: Visit
) -> None:
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth) as client:
        created = await client.post(
            "/v1/agents", json={"name": "console-gone", "model": "openai/gpt-4o-mini"}
        )
    agent_id = created.json()["id"]
    page = visit.page
    await page.goto(f"{mesh.http_url}/ui/")
    await page.fill("input[name=key]", mesh.api_key)
    await page.click("#sign-in-form button")
    await page.click(f'[data-agent-id="{agent_id}"]')
    await expect(page.locator("#agent-title")).to_have_text("console-gone")
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth) as client:
        assert (await client.delete(f"/v1/agents/{agent_id}")).status_code == 204

    await page.fill("#chat-form input[name=text]", "are you there?")
    await page.click("#chat-form button")
    await expect(page.locator("#chat-error")).to_contain_text("AGENT_NOT_FOUND")
    assert visit.errors == []
