// The web chat: models, conversations and streamed answers, all through
// shelf's public API (see api.js). One page, no framework.

import { apiKey, ApiError, events, json, records, request, setApiKey, whenUnauthorized } from "./api.js";
import { renderInto } from "./markdown.js";

const $ = (id) => document.getElementById(id);

const state = {
  /** [{name, size, quant, params, loaded}] */
  models: [],
  /** The open conversation as the server keeps it, or null for a new chat. */
  conversation: null,
  /** The running answer's AbortController. */
  controller: null,
};

// ---- start, keys ---------------------------------------------------------

whenUnauthorized(() => askForKey(apiKey() ? "That key was refused." : ""));

async function boot() {
  $("forget-key").hidden = !apiKey();
  try {
    await loadModels();
    await loadConversations();
    const id = Number(new URLSearchParams(location.hash.slice(1)).get("c"));
    if (id) await openConversation(id);
    else newChat();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) showError(error);
  }
}

function askForKey(problem) {
  const dialog = $("key-dialog");
  $("key-error").hidden = !problem;
  $("key-error").textContent = problem;
  if (!dialog.open) dialog.showModal();
  $("key").focus();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey($("key").value.trim());
  $("key").value = "";
  $("key-dialog").close();
  boot();
});

$("key-dialog").addEventListener("cancel", (event) => event.preventDefault());

$("forget-key").addEventListener("click", () => {
  setApiKey("");
  location.reload();
});

// ---- models --------------------------------------------------------------

async function loadModels() {
  const [tags, running, listed] = await Promise.all([
    json("GET", "/api/tags"),
    json("GET", "/api/ps"),
    json("GET", "/v1/models"),
  ]);
  const loaded = new Map(running.models.map((m) => [m.name, m]));
  const models = tags.models.map((m) => ({
    name: m.name,
    size: m.size,
    quant: m.details?.quantization_level,
    params: m.details?.parameter_size,
    loaded: loaded.get(m.name),
  }));
  for (const m of listed.data) {
    if (!models.some((known) => known.name === m.id)) models.push({ name: m.id, loaded: loaded.get(m.id) });
  }
  state.models = models;
  const select = $("model");
  const chosen = select.value || localStorage.getItem("shelf.model");
  select.replaceChildren(
    ...models.map((m) => {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = [m.name, m.params, m.quant, m.size && bytes(m.size), m.loaded && "loaded"]
        .filter(Boolean)
        .join(" · ");
      return option;
    }),
  );
  if (models.some((m) => m.name === chosen)) select.value = chosen;
  describeModel();
  $("memory").textContent = running.models.length
    ? `Loaded: ${running.models.map((m) => `${m.name} (${bytes(m.size)}, ${m.busy_slots ?? 0} of ${m.slots ?? "?"} slots busy)`).join(", ")}`
    : "No model is loaded.";
}

function describeModel() {
  const model = state.models.find((m) => m.name === $("model").value);
  $("model-info").textContent = !model ? "" : model.loaded ? `loaded, ${bytes(model.loaded.size)} in memory` : "not loaded";
}

$("model").addEventListener("change", () => {
  localStorage.setItem("shelf.model", $("model").value);
  describeModel();
});

$("open-models").addEventListener("click", async () => {
  $("models-dialog").showModal();
  try {
    await loadModels();
  } catch (error) {
    $("pull-status").textContent = error.message;
  }
  renderModelsTable();
});

function renderModelsTable() {
  const rows = state.models.map((m) => {
    const row = document.createElement("tr");
    for (const text of [m.name, m.size ? bytes(m.size) : "", m.quant || "", m.loaded ? `yes, ${bytes(m.loaded.size)}` : "no"]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    const cell = document.createElement("td");
    if (m.size) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", `Delete ${m.name}`);
      remove.addEventListener("click", () => deleteModel(m.name));
      cell.append(remove);
    }
    row.append(cell);
    return row;
  });
  $("models-table").tBodies[0].replaceChildren(...rows);
}

async function deleteModel(name) {
  if (!confirm(`Delete ${name} from the store?`)) return;
  try {
    await json("DELETE", "/api/delete", { model: name });
    await loadModels();
    renderModelsTable();
  } catch (error) {
    $("pull-status").textContent = error.message;
  }
}

$("pull-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const progress = $("pull-progress");
  const status = $("pull-status");
  progress.hidden = false;
  progress.value = 0;
  status.textContent = "starting";
  $("pull").disabled = true;
  try {
    const body = { model: $("pull-name").value.trim(), insecure: $("pull-insecure").checked, stream: true };
    const response = await request("POST", "/api/pull", body);
    for await (const update of records(response)) {
      if (update.error) throw new Error(update.error);
      if (update.total) {
        progress.value = (100 * (update.completed || 0)) / update.total;
        status.textContent = `${update.status}: ${Math.floor(progress.value)}%`;
      } else {
        status.textContent = update.status;
      }
      if (update.status === "success") {
        progress.value = 100;
        status.textContent = "success: 100%";
      }
    }
    await loadModels();
    renderModelsTable();
  } catch (error) {
    status.textContent = `failed: ${error.message}`;
  } finally {
    $("pull").disabled = false;
  }
});

$("fit").addEventListener("click", async () => {
  const table = $("fit-table");
  try {
    const { rows } = await json("GET", "/api/fit");
    table.tBodies[0].replaceChildren(
      ...rows.map((r) => {
        const row = document.createElement("tr");
        for (const text of [r.model, r.quant, bytes(r.memory_bytes), r.verdict, r.decode_tps.toFixed(1)]) {
          const cell = document.createElement("td");
          cell.textContent = text;
          row.append(cell);
        }
        return row;
      }),
    );
    table.hidden = false;
  } catch (error) {
    $("pull-status").textContent = error.message;
  }
});

// ---- conversations -------------------------------------------------------

async function loadConversations() {
  const words = $("search").value.trim();
  const path = words ? `/api/conversations?q=${encodeURIComponent(words)}` : "/api/conversations";
  const { conversations } = await json("GET", path);
  $("conversations").replaceChildren(
    ...conversations.map((c) => {
      const item = document.createElement("li");
      const open = document.createElement("button");
      open.type = "button";
      open.textContent = c.title;
      open.dataset.id = c.id;
      if (state.conversation?.id === c.id) open.setAttribute("aria-current", "true");
      if (c.snippet) {
        const snippet = document.createElement("span");
        snippet.className = "snippet";
        snippet.textContent = c.snippet;
        open.append(snippet);
      }
      open.addEventListener("click", () => openConversation(c.id));
      item.append(open);
      return item;
    }),
  );
}

let searching;
$("search").addEventListener("input", () => {
  clearTimeout(searching);
  searching = setTimeout(() => loadConversations().catch(showError), 200);
});

async function openConversation(id) {
  if (state.controller) return;
  try {
    state.conversation = await json("GET", `/api/conversations/${id}`);
  } catch (error) {
    if (error.status === 404) return newChat();
    throw error;
  }
  const c = state.conversation;
  if (c.model && state.models.some((m) => m.name === c.model)) $("model").value = c.model;
  $("system").value = c.system || "";
  $("temperature").value = c.temperature ?? 0.7;
  location.hash = `c=${id}`;
  showConversation();
  closeSidebar();
  await loadConversations();
}

function newChat() {
  if (state.controller) return;
  state.conversation = null;
  $("system").value = "";
  $("temperature").value = 0.7;
  history.replaceState(null, "", location.pathname);
  showConversation();
  closeSidebar();
  loadConversations().catch(showError);
}

$("new-chat").addEventListener("click", newChat);

function showConversation() {
  const c = state.conversation;
  $("title").textContent = c ? c.title : "New chat";
  $("conversation-actions").hidden = !c;
  renderMessages();
  describeModel();
}

$("rename").addEventListener("click", async () => {
  const title = prompt("New title", state.conversation.title);
  if (title === null) return;
  state.conversation = await json("PATCH", `/api/conversations/${state.conversation.id}`, { title });
  showConversation();
  await loadConversations();
});

$("delete").addEventListener("click", async () => {
  if (!confirm(`Delete “${state.conversation.title}”?`)) return;
  await json("DELETE", `/api/conversations/${state.conversation.id}`);
  newChat();
});

$("export-md").addEventListener("click", async () => {
  const response = await request("GET", `/api/conversations/${state.conversation.id}?format=markdown`);
  download(await response.blob(), `conversation-${state.conversation.id}.md`);
});

$("export-json").addEventListener("click", () => {
  const text = JSON.stringify(state.conversation, null, 2);
  download(new Blob([text], { type: "application/json" }), `conversation-${state.conversation.id}.json`);
});

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

/** Store the open conversation's messages and settings. */
async function save() {
  const c = state.conversation;
  const body = {
    model: $("model").value,
    system: $("system").value,
    temperature: Number($("temperature").value),
    messages: c.messages.map(({ role, content, extra }) => (extra ? { role, content, extra } : { role, content })),
  };
  state.conversation = await json("PATCH", `/api/conversations/${c.id}`, body);
  $("title").textContent = state.conversation.title;
  await loadConversations();
}

// ---- messages ------------------------------------------------------------

function renderMessages() {
  const messages = state.conversation?.messages || [];
  $("messages").replaceChildren(...messages.map((m, i) => messageElement(m, i, i === messages.length - 1)));
  $("messages").scrollTop = $("messages").scrollHeight;
}

/** A message's element; `last` gets the regenerate button. */
function messageElement(message, index, last) {
  const element = document.createElement("article");
  element.className = `message ${message.role}`;
  const role = document.createElement("div");
  role.className = "role";
  role.textContent = message.role === "user" ? "You" : message.extra?.model || message.role;
  const reasoning = document.createElement("details");
  reasoning.className = "reasoning";
  reasoning.innerHTML = "<summary>Reasoning</summary><div></div>";
  const calls = document.createElement("div");
  calls.className = "calls";
  const body = document.createElement("div");
  body.className = "body";
  const speed = document.createElement("div");
  speed.className = "speed";
  const tools = document.createElement("div");
  tools.className = "tools";
  element.append(role, reasoning, calls, body, speed, tools);
  const view = { element, reasoning, calls, body, speed, tools };
  fill(view, message);
  if (message.role === "user") {
    tools.append(button("Edit", () => edit(view, index)));
  } else if (message.role === "assistant") {
    tools.append(button("Copy", () => navigator.clipboard?.writeText(message.content)));
    if (last) tools.append(button("Regenerate", regenerate));
  }
  return element;
}

/** Show `message` in its element's parts. */
function fill(view, message) {
  const extra = message.extra || {};
  if (message.role === "assistant") renderInto(view.body, message.content);
  else view.body.textContent = message.content;
  view.reasoning.hidden = !extra.reasoning;
  if (extra.reasoning) view.reasoning.lastElementChild.textContent = extra.reasoning;
  view.calls.replaceChildren(
    ...(extra.tool_calls || []).map((call) => {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = `Tool call: ${call.name}`;
      const args = document.createElement("pre");
      args.textContent = call.arguments;
      details.append(summary, args);
      return details;
    }),
  );
  view.speed.textContent = speedText(extra);
}

function speedText(extra) {
  const t = extra.timings;
  const parts = [];
  if (t?.prompt_per_second) parts.push(`prefill ${t.prompt_per_second.toFixed(1)} t/s`);
  if (t?.predicted_per_second) parts.push(`decode ${t.predicted_per_second.toFixed(1)} t/s`);
  if (extra.usage) parts.push(`${extra.usage.completion_tokens} tokens`);
  if (extra.stopped) parts.push("stopped");
  return parts.join(" · ");
}

function button(label, action) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.addEventListener("click", action);
  return element;
}

/** Edit a question and send it again: what followed it is dropped. */
function edit(view, index) {
  if (state.controller) return;
  const box = document.createElement("textarea");
  box.value = state.conversation.messages[index].content;
  box.setAttribute("aria-label", "Edit your message");
  const resend = button("Send", () => {
    const content = box.value.trim();
    if (!content) return;
    state.conversation.messages = state.conversation.messages.slice(0, index);
    state.conversation.messages.push({ role: "user", content });
    renderMessages();
    answer();
  });
  view.body.replaceChildren(box);
  view.tools.replaceChildren(resend, button("Cancel", renderMessages));
  box.focus();
}

function regenerate() {
  if (state.controller) return;
  const messages = state.conversation.messages;
  if (messages.at(-1)?.role === "assistant") messages.pop();
  renderMessages();
  answer();
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.controller) state.controller.abort();
});

$("stop").addEventListener("click", () => state.controller?.abort());

async function send() {
  const text = $("prompt").value.trim();
  if (!text || state.controller) return;
  const question = { role: "user", content: text };
  try {
    if (!state.conversation) {
      state.conversation = await json("POST", "/api/conversations", {
        model: $("model").value,
        system: $("system").value,
        temperature: Number($("temperature").value),
        messages: [question],
      });
      history.replaceState(null, "", `#c=${state.conversation.id}`);
      showConversation();
      loadConversations().catch(showError);
    } else {
      state.conversation.messages.push(question);
      renderMessages();
    }
  } catch (error) {
    return showError(error);
  }
  $("prompt").value = "";
  await answer();
}

/** Stream the model's answer to the conversation so far, then store both. */
async function answer() {
  const conversation = state.conversation;
  const model = $("model").value;
  const system = $("system").value.trim();
  const messages = system ? [{ role: "system", content: system }] : [];
  for (const m of conversation.messages) messages.push({ role: m.role, content: m.content });
  const reply = { role: "assistant", content: "", extra: { model } };
  const element = messageElement(reply, conversation.messages.length, false);
  $("messages").append(element);
  const view = {
    element,
    reasoning: element.querySelector(".reasoning"),
    calls: element.querySelector(".calls"),
    body: element.querySelector(".body"),
    speed: element.querySelector(".speed"),
  };
  hideError();
  const controller = new AbortController();
  state.controller = controller;
  busy(true);
  try {
    const body = {
      model,
      messages,
      stream: true,
      stream_options: { include_usage: true },
      temperature: Number($("temperature").value),
    };
    const response = await request("POST", "/v1/chat/completions", body, controller.signal);
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message || String(chunk.error));
      take(reply, chunk);
      fill(view, reply);
      $("messages").scrollTop = $("messages").scrollHeight;
    }
  } catch (error) {
    if (error.name === "AbortError") reply.extra.stopped = true;
    else showError(error);
  } finally {
    state.controller = null;
    busy(false);
  }
  // A finished answer is kept even when empty (the model said nothing); a
  // failed one only for what it wrote.
  const said = reply.content || reply.extra.reasoning || reply.extra.tool_calls;
  if (said || reply.extra.usage) conversation.messages.push(reply);
  try {
    await save();
  } catch (error) {
    showError(error);
  }
  renderMessages();
}

/** Add one streamed chunk to the reply. */
function take(reply, chunk) {
  const delta = chunk.choices?.[0]?.delta || {};
  if (delta.content) reply.content += delta.content;
  if (delta.reasoning_content) reply.extra.reasoning = (reply.extra.reasoning || "") + delta.reasoning_content;
  for (const call of delta.tool_calls || []) {
    const calls = (reply.extra.tool_calls ||= []);
    const known = (calls[call.index] ||= { name: "", arguments: "" });
    if (call.function?.name) known.name = call.function.name;
    if (call.function?.arguments) known.arguments += call.function.arguments;
  }
  if (chunk.usage) reply.extra.usage = chunk.usage;
  if (chunk.timings) reply.extra.timings = chunk.timings;
}

function busy(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  if (on) $("stop").focus();
  else $("prompt").focus();
}

// ---- citations -----------------------------------------------------------

$("messages").addEventListener("click", async (event) => {
  const link = event.target.closest("a.cite");
  if (!link) return;
  event.preventDefault();
  const { path, start, end } = link.dataset;
  const query = new URLSearchParams({ path, start, end });
  try {
    const file = await json("GET", `/api/assistant/lines?${query}`);
    $("viewer-heading").textContent = `${file.path}:${file.start}-${file.end}`;
    $("viewer-text").textContent = file.lines.map((line, i) => `${file.start + i}| ${line}`).join("\n");
    $("viewer").showModal();
  } catch (error) {
    showError(error);
  }
});

// ---- the rest --------------------------------------------------------------

for (const close of document.querySelectorAll("[data-close]")) {
  close.addEventListener("click", () => close.closest("dialog").close());
}

$("toggle-sidebar").addEventListener("click", () => {
  const open = $("sidebar").classList.toggle("open");
  $("toggle-sidebar").setAttribute("aria-expanded", String(open));
  if (open) $("new-chat").focus();
});

function closeSidebar() {
  $("sidebar").classList.remove("open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
}

function showError(error) {
  $("status").textContent = error.message || String(error);
  $("status").hidden = false;
}

function hideError() {
  $("status").hidden = true;
}

function bytes(n) {
  if (!n) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

boot();
