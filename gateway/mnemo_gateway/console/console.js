// The mnemo web console: plain ES modules over the REST API (the same origin), no build step, no
// dependency. The API key stays in this tab's sessionStorage and goes out as `Authorization: Bearer`.

const KEY_STORAGE = "mnemo.apiKey";
const MEMORY_TOOLS = /^(core_memory_|memory_)/;

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  agents: [],
  agent: null,
  blocks: new Map(),
  busy: false,
};

const $ = (selector) => document.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || `HTTP ${status}`);
    this.status = status;
    this.reason = body?.reason || "";
  }
}

async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (response.status === 204) return null;
  const payload = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

// Lists come as a JSON array; a page object ({"items": [...]}) is read the same way.
const items = (payload) => (Array.isArray(payload) ? payload : payload?.items ?? payload?.data ?? []);

function describe(error) {
  return error instanceof ApiError && error.reason ? `${error.message} (${error.reason})` : String(error.message || error);
}

// --- sign in -------------------------------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  await api("/v1/agents?limit=1"); // 401 for a wrong key
  sessionStorage.setItem(KEY_STORAGE, key);
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#nav").hidden = false;
  $("#sign-out").hidden = false;
  await Promise.all([loadAgents(), loadModels()]);
}

function signOut() {
  sessionStorage.removeItem(KEY_STORAGE);
  location.reload();
}

// --- agents --------------------------------------------------------------------------------------------

async function loadAgents() {
  state.agents = items(await api("/v1/agents?limit=100"));
  const list = $("#agents");
  list.replaceChildren(
    ...state.agents.map((agent) =>
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: state.agent?.id === agent.id ? "agent selected" : "agent",
            "data-agent-id": agent.id,
            onclick: () => shown(selectAgent(agent.id), "#chat-error"),
          },
          el("strong", {}, agent.name),
          el("small", {}, agent.model),
        ),
      ),
    ),
  );
  if (!state.agents.length) list.append(el("li", { class: "muted" }, "No agents yet."));
}

async function loadModels() {
  const { models = [] } = (await api("/v1/models")) || {};
  const select = $("#create-agent-form select[name=model]");
  select.replaceChildren(
    ...models.filter((m) => m.kind === "chat").map((m) => el("option", { value: m.name }, m.name)),
  );
}

async function createAgent(form) {
  const data = new FormData(form);
  const agent = await api("/v1/agents", {
    method: "POST",
    body: {
      name: data.get("name"),
      model: data.get("model"),
      memory_blocks: [
        { label: "persona", value: data.get("persona") },
        { label: "human", value: data.get("human") },
      ],
    },
  });
  form.reset();
  $("#create-agent").open = false;
  await loadAgents();
  await selectAgent(agent.id);
}

async function selectAgent(agentId) {
  state.agent = await api(`/v1/agents/${encodeURIComponent(agentId)}`);
  $("#agent-title").textContent = state.agent.name;
  for (const control of document.querySelectorAll("#chat-form input, #chat-form button")) control.disabled = false;
  state.blocks = new Map();
  await loadAgents();
  await Promise.all([loadBlocks(), loadHistory()]);
  const view = document.querySelector("#nav button.active")?.dataset.view;
  if (view === "runs") await loadRuns();
}

// --- core memory ---------------------------------------------------------------------------------------

async function loadBlocks() {
  if (!state.agent) return;
  const blocks = items(await api(`/v1/agents/${state.agent.id}/core-memory/blocks`));
  const container = $("#blocks");
  const previous = state.blocks;
  state.blocks = new Map(blocks.map((b) => [b.label, b.value]));
  container.replaceChildren(
    ...blocks.map((block) => {
      const changed = previous.size > 0 && previous.get(block.label) !== block.value;
      return el(
        "article",
        { class: changed ? "block changed" : "block", "data-label": block.label },
        el("header", {}, el("strong", {}, block.label), el("small", {}, `${block.value.length}/${block.limit} chars`)),
        el("pre", {}, block.value || "(empty)"),
      );
    }),
  );
}

// --- chat ----------------------------------------------------------------------------------------------

function stepGroup(step, runId) {
  const id = `step-${runId}-${step}`;
  let group = document.getElementById(id);
  if (!group) {
    group = el("li", { id, class: "step" }, el("div", { class: "step-header" }, `step ${step + 1}`, el("span", { class: "timing" })));
    $("#transcript").append(group);
  }
  return group;
}

function showMessage(message, container = $("#transcript")) {
  switch (message.message_type) {
    case "user_message":
      container.append(el("li", { class: "user" }, message.content));
      break;
    case "assistant_message":
      container.append(el("div", { class: "assistant" }, message.content));
      break;
    case "reasoning_message":
      container.append(el("div", { class: "reasoning" }, message.reasoning || message.content || ""));
      break;
    case "tool_call_message":
      container.append(
        el("div", { class: "tool-call" }, el("span", {}, "→ "), el("code", {}, `${message.tool_call.name}(${message.tool_call.arguments})`)),
      );
      break;
    case "tool_return_message":
      container.append(
        el(
          "div",
          { class: `tool-return ${message.status}` },
          el("span", {}, "← "),
          el("code", {}, `${message.name}: ${message.tool_return}`),
        ),
      );
      break;
    default:
      break;
  }
}

async function loadHistory() {
  $("#transcript").replaceChildren();
  // The newest 50, shown oldest first.
  const messages = items(await api(`/v1/agents/${state.agent.id}/messages?limit=50&order=desc`)).reverse();
  for (const message of messages) {
    if (message.message_type === "user_message") showMessage(message);
    else if (message.run_id) showMessage(message, stepGroup(message.step ?? 0, message.run_id));
  }
}

// Reads a Server-Sent Events body: yields each `data:` payload.
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) yield data;
    }
  }
}

async function send(form) {
  if (state.busy || !state.agent) return;
  const text = new FormData(form).get("text");
  form.reset();
  state.busy = true;
  $("#chat-error").textContent = "";
  showMessage({ message_type: "user_message", content: text });
  // A step's time: from the end of the one before (or from sending) to its last event, on this clock.
  const started = performance.now();
  let stepStarted = started;
  let lastEventAt = started;
  let lastStep = null;
  let live = null; // the element that receives token deltas of the current step
  try {
    const response = await fetch(`/v1/agents/${state.agent.id}/messages/stream`, {
      method: "POST",
      headers: { Authorization: `Bearer ${state.key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: text }], stream_tokens: true }),
    });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    for await (const data of sseEvents(response)) {
      if (data === "[DONE]") break;
      const event = JSON.parse(data);
      if (event.detail && event.reason) throw new ApiError(500, event);
      const type = event.message_type;
      if (event.run_id && event.step !== undefined && event.step !== lastStep) {
        lastStep = event.step;
        stepStarted = lastEventAt;
        live = null;
      }
      const group = event.run_id && event.step !== undefined ? stepGroup(event.step, event.run_id) : null;
      if (type === "assistant_message_delta" || type === "reasoning_message_delta") {
        if (!live) {
          live = el("div", { class: type === "assistant_message_delta" ? "assistant streaming" : "reasoning streaming" });
          group.append(live);
        }
        live.textContent += event.content || "";
      } else if (type === "stop_reason") {
        $("#transcript").append(el("li", { class: "outcome" }, `turn ended: ${event.stop_reason}`));
      } else if (type === "usage_statistics") {
        $("#transcript").append(
          el("li", { class: "outcome" }, `${event.step_count} steps · ${event.total_tokens} tokens · ${Math.round(performance.now() - started)} ms`),
        );
      } else if (group) {
        if (type === "assistant_message" && live?.classList.contains("assistant")) {
          live.classList.remove("streaming"); // the stored message confirms what was streamed
          live.textContent = event.content;
          live = null;
        } else {
          showMessage(event, group);
        }
        group.querySelector(".timing").textContent = ` · ${Math.round(performance.now() - stepStarted)} ms`;
        if (type === "tool_return_message" && MEMORY_TOOLS.test(event.name || "")) await loadBlocks();
      }
      lastEventAt = performance.now();
      $("#transcript").lastElementChild?.scrollIntoView({ block: "end" });
    }
    await loadBlocks();
  } catch (error) {
    $("#chat-error").textContent = describe(error);
  } finally {
    state.busy = false;
  }
}

// --- archival memory -----------------------------------------------------------------------------------

async function searchArchival(form) {
  if (!state.agent) return;
  const query = new FormData(form).get("query");
  const result = await api(`/v1/agents/${state.agent.id}/archival-memory/search?query=${encodeURIComponent(query)}`);
  $("#archival-results").replaceChildren(
    ...(result.results || []).map((hit) =>
      el("li", {}, el("p", {}, hit.passage.text), el("small", {}, `score ${hit.score.score.toFixed(3)} · ${hit.passage.created_at}`)),
    ),
  );
  if (!result.results?.length) $("#archival-results").append(el("li", { class: "muted" }, "Nothing found."));
}

async function insertArchival(form) {
  if (!state.agent) return;
  const text = new FormData(form).get("text");
  await api(`/v1/agents/${state.agent.id}/archival-memory`, { method: "POST", body: { text } });
  form.reset();
}

// --- runs and usage ------------------------------------------------------------------------------------

async function loadRuns() {
  const query = state.agent ? `?agent_id=${encodeURIComponent(state.agent.id)}&limit=50` : "?limit=50";
  const runs = items(await api(`/v1/runs${query}`));
  $("#run-detail").replaceChildren();
  $("#runs").replaceChildren(
    ...runs.map((run) => {
      const duration = run.completed_at ? `${Date.parse(run.completed_at) - Date.parse(run.created_at)} ms` : "";
      return el(
        "tr",
        {},
        el("td", {}, el("button", { type: "button", class: "link", onclick: () => shown(showRun(run), "#runs-error") }, el("code", {}, run.id))),
        el("td", {}, run.status),
        el("td", {}, run.stop_reason || ""),
        el("td", {}, String(run.usage?.step_count ?? 0)),
        el("td", {}, String(run.usage?.total_tokens ?? 0)),
        el("td", {}, duration),
        el("td", {}, new Date(run.created_at).toLocaleString()),
      );
    }),
  );
}

// A run's messages by step, each step with the time the server took for it (from the stored messages'
// times: a step's messages are stored together when it ends).
async function showRun(run) {
  const messages = items(await api(`/v1/runs/${encodeURIComponent(run.id)}/messages`));
  const steps = new Map();
  for (const message of messages) {
    if (message.message_type === "user_message") continue;
    if (!steps.has(message.step)) steps.set(message.step, []);
    steps.get(message.step).push(message);
  }
  let previous = Date.parse(run.created_at);
  const list = el("ol", { class: "run-steps" });
  for (const [step, stepMessages] of [...steps.entries()].sort((a, b) => a[0] - b[0])) {
    const ended = Math.max(...stepMessages.map((m) => Date.parse(m.date)));
    const item = el("li", { class: "step" }, el("div", { class: "step-header" }, `step ${step + 1} · ${Math.max(0, ended - previous)} ms`));
    for (const message of stepMessages) showMessage(message, item);
    list.append(item);
    previous = ended;
  }
  $("#run-detail").replaceChildren(el("h3", {}, `Run ${run.id}`), list);
}

async function loadUsage() {
  const rows = items(await api("/v1/usage?group_by=model"));
  $("#usage").replaceChildren(
    ...rows.map((row) =>
      el(
        "tr",
        {},
        el("td", {}, row.model || "(all)"),
        el("td", {}, String(row.request_count)),
        el("td", {}, String(row.prompt_tokens)),
        el("td", {}, String(row.completion_tokens)),
        el("td", {}, String(row.total_tokens)),
      ),
    ),
  );
}

// --- wiring --------------------------------------------------------------------------------------------

function showView(name) {
  for (const button of document.querySelectorAll("#nav button")) button.classList.toggle("active", button.dataset.view === name);
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  if (name === "runs") return loadRuns();
  if (name === "usage") return loadUsage();
  return Promise.resolve();
}

// Shows a failed action's error in the view's error line instead of leaving it unhandled.
async function shown(promise, errorSelector) {
  const line = $(errorSelector);
  if (line) line.textContent = "";
  try {
    await promise;
  } catch (error) {
    if (line) line.textContent = describe(error);
    else console.error(error);
  }
}

function guard(handler, errorSelector) {
  return async (event) => {
    event.preventDefault();
    if (errorSelector) $(errorSelector).textContent = "";
    try {
      await handler(event.target);
    } catch (error) {
      if (errorSelector) $(errorSelector).textContent = describe(error);
      else throw error;
    }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener(
    "submit",
    guard(async (form) => {
      try {
        await signIn(new FormData(form).get("key"));
      } catch (error) {
        state.key = "";
        throw error;
      }
    }, "#sign-in-error"),
  );
  $("#sign-out").addEventListener("click", signOut);
  $("#create-agent-form").addEventListener("submit", guard(createAgent, "#create-error"));
  $("#chat-form").addEventListener("submit", guard(send, "#chat-error"));
  $("#archival-search-form").addEventListener("submit", guard(searchArchival, "#archival-error"));
  $("#archival-insert-form").addEventListener("submit", guard(insertArchival, "#archival-error"));
  $("#runs-refresh").addEventListener("click", () => shown(loadRuns(), "#runs-error"));
  $("#usage-refresh").addEventListener("click", () => shown(loadUsage(), "#usage-error"));
  for (const button of document.querySelectorAll("#nav button")) {
    button.addEventListener("click", () => shown(showView(button.dataset.view), `#${button.dataset.view}-error`));
  }
  if (state.key) signIn(state.key).catch(() => sessionStorage.removeItem(KEY_STORAGE));
});
