// The platform's page: sign in, submit images, watch tasks, see results. Plain DOM, no
// framework and nothing from elsewhere. The token lives in session storage (gone with the tab).
"use strict";

const PAGE = 20;
const RECONNECT_MS = 1000;
const SETTLED = new Set(["done", "failed", "canceled"]);
// How far along a status is: a list read and an event that cross keep the later one.
const RANK = { queued: 0, "in progress": 1, done: 2, failed: 2, canceled: 2 };
const SEEN_KEPT = 1000;
const SUBMIT_WAIT_S = 30;  // how long one upload waits for its result before the list takes over
const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem("token"),
  user: sessionStorage.getItem("user"),
  cursors: [0],          // after_id of each page visited; the last is the current page
  tasks: [],
  more: false,
  selected: null,        // id of the task shown in detail
  shownStatus: null,     // its status when it was drawn
  events: null,          // the AbortController of the open event stream
  lastEventId: null,     // the last event received: a reconnect resumes after it
  seen: new Map(),       // the latest status each recent event told, by task id
  pictureUrl: null,
};

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && state.token) {
    signOut("Your session ended; sign in again.");
    throw new Error("Not authenticated");
  }
  return response;
}

async function detailOf(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// -- signing in ------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const form = new URLSearchParams({ username: $("username").value, password: $("password").value });
  const response = await fetch("/oauth/login", { method: "POST", body: form });
  if (!response.ok) {
    $("login-error").textContent = await detailOf(response);
    return;
  }
  state.token = (await response.json()).access_token;
  state.user = $("username").value;
  sessionStorage.setItem("token", state.token);
  sessionStorage.setItem("user", state.user);
  $("password").value = "";
  await start();
}

function signOut(message = "") {
  state.token = null;
  sessionStorage.removeItem("token");
  sessionStorage.removeItem("user");
  if (state.events) state.events.abort();
  state.events = null;
  state.lastEventId = null;
  $("app").hidden = true;
  $("session").hidden = true;
  $("new-key").textContent = "";  // a key shown once is not left on the page
  $("new-key-box").hidden = true;
  $("login-section").hidden = false;
  $("login-error").textContent = message;
  $("username").focus();
}

// Sign out: the server ends every token of the session (POST /oauth/logout), then the page
// forgets its own. The page forgets it even when the server cannot be reached.
async function logOut() {
  const token = state.token;
  signOut();
  if (!token) return;
  try {
    await fetch("/oauth/logout", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
  } catch {
    // offline: the token still expires by itself
  }
}

async function start() {
  $("login-section").hidden = true;
  $("app").hidden = false;
  $("session").hidden = false;
  $("whoami").textContent = state.user || "";
  await loadModels();
  listen();
  await refresh();
  await loadKeys();
}

// -- live status: the server's event stream (GET /api/tasks/events), no polling ---------------

async function listen() {
  if (state.events) state.events.abort();
  const controller = new AbortController();
  state.events = controller;
  while (state.events === controller && state.token) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
    if (state.lastEventId !== null) headers["Last-Event-ID"] = state.lastEventId;
    try {
      const response = await fetch("/api/tasks/events", { headers, signal: controller.signal });
      if (response.status === 401) {
        signOut("Your session ended; sign in again.");
        return;
      }
      if (response.ok) await readEvents(response.body, controller);
    } catch {
      if (controller.signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));  // then resume
  }
}

async function readEvents(body, controller) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  while (!controller.signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let id = null;
      let data = null;
      for (const line of block.split("\n")) {
        if (line.startsWith("id: ")) id = line.slice(4);
        else if (line.startsWith("data: ")) data = line.slice(6);
      }
      if (id !== null) state.lastEventId = id;
      if (data !== null) await taskChanged(JSON.parse(data));
    }
  }
}

async function taskChanged(event) {
  state.seen.delete(event.id);
  state.seen.set(event.id, event.status);
  if (state.seen.size > SEEN_KEPT) state.seen.delete(state.seen.keys().next().value);
  const task = state.tasks.find((t) => t.id === event.id);
  if (!task || task.status === event.status) return;
  if ($("status-filter").value) {
    await refresh();  // it may leave (or join) the filtered page
    return;
  }
  task.status = event.status;
  renderTasks();
  if (event.id === state.selected && event.status !== state.shownStatus) await showTask(event.id);
}

// -- models and submitting -------------------------------------------------------------------

async function loadModels() {
  const response = await api("/api/models");
  if (!response.ok) return;
  const models = await response.json();
  fillSelect($("detection-model"), models.detection_models);
  fillSelect($("classification-model"), models.classification_models);
}

function fillSelect(select, models) {
  select.replaceChildren(...models.map((m) => {
    const option = document.createElement("option");
    option.value = m.model_id;
    option.textContent = m.model_name;
    return option;
  }));
}

async function submitFiles(files) {
  const images = [...files].filter((f) => f.type === "image/jpeg" || f.type === "image/png");
  const message = $("submit-message");
  if (!images.length) {
    message.textContent = "Choose JPEG or PNG images.";
    return;
  }
  const query = new URLSearchParams({
    detection_model_id: $("detection-model").value,
    classification_model_id: $("classification-model").value,
  });
  const ids = [];
  const errors = [];
  // One image: the answer waits for its result (Prefer: wait), so it is shown at once.
  const single = images.length === 1;
  let settled = null;
  for (const [n, file] of images.entries()) {
    message.textContent = single ? "Uploading; waiting for the result…"
      : `Uploading ${n + 1} of ${images.length}…`;
    const key = crypto.randomUUID();  // a retry of this upload can never make a second task
    const headers = { "Content-Type": file.type, "Idempotency-Key": key };
    if (single) headers.Prefer = `wait=${SUBMIT_WAIT_S}`;
    const response = await api(`/api/tasks?${query}`, { method: "POST", body: file, headers });
    if (response.ok) {
      const body = await response.json();
      ids.push(body.id);
      if (SETTLED.has(body.status)) settled = body.id;
    } else errors.push(`${file.name}: ${await detailOf(response)}`);
  }
  message.textContent = [
    ids.length ? `Submitted ${ids.length} image${ids.length > 1 ? "s" : ""}.` : "",
    ...errors,
  ].filter(Boolean).join(" ");
  $("files").value = "";
  if (ids.length) {
    $("status-filter").value = "";
    // Show the new tasks: on the page shown when it has room for them, else on a page that
    // starts with them (the pages before it stay reachable with "Previous page").
    if (state.more || state.tasks.length >= PAGE) state.cursors.push(Math.min(...ids) - 1);
    await refresh();
    if (settled !== null) await showTask(settled);
  }
}

// -- the task list ---------------------------------------------------------------------------

async function refresh() {
  const after = state.cursors[state.cursors.length - 1];
  const query = new URLSearchParams({ after_id: after, limit: PAGE + 1 });
  if ($("status-filter").value) query.set("status", $("status-filter").value);
  let response;
  try {
    response = await api(`/api/tasks?${query}`);
  } catch {
    return;
  }
  if (!response.ok) return;
  const tasks = (await response.json()).tasks;
  state.more = tasks.length > PAGE;
  state.tasks = tasks.slice(0, PAGE);
  for (const task of state.tasks) {  // an event that came while the list was read
    const seen = state.seen.get(task.id);
    if (seen && RANK[seen] > RANK[task.status]) task.status = seen;
  }
  renderTasks();
  const current = state.tasks.find((t) => t.id === state.selected);
  if (current && current.status !== state.shownStatus) await showTask(current.id);
}

function button(label, handler, secondary = true) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (secondary) b.className = "secondary";
  b.addEventListener("click", handler);
  return b;
}

function renderTasks() {
  const rows = state.tasks.map((task) => {
    const tr = document.createElement("tr");
    tr.dataset.id = task.id;
    if (task.id === state.selected) tr.className = "selected";
    const cells = [String(task.id), new Date(task.created_at).toLocaleString()];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    const status = document.createElement("td");
    status.className = `status status-${task.status.replace(" ", "-")}`;
    status.textContent = task.status;
    tr.append(status);
    const actions = document.createElement("td");
    actions.className = "actions";
    actions.append(button("View", () => showTask(task.id), false));
    actions.lastChild.setAttribute("aria-label", `View task ${task.id}`);
    if (!SETTLED.has(task.status)) {
      actions.append(button("Cancel", () => cancelTask(task.id)));
      actions.lastChild.setAttribute("aria-label", `Cancel task ${task.id}`);
    }
    if (task.status === "failed" || task.status === "canceled") {
      actions.append(button("Retry", () => retryTask(task.id)));
      actions.lastChild.setAttribute("aria-label", `Retry task ${task.id}`);
    }
    actions.append(button("Delete", () => deleteTask(task.id)));
    actions.lastChild.setAttribute("aria-label", `Delete task ${task.id}`);
    tr.append(actions);
    return tr;
  });
  $("tasks").tBodies[0].replaceChildren(...rows);
  $("no-tasks").hidden = rows.length > 0;
  $("prev-page").disabled = state.cursors.length < 2;
  $("next-page").disabled = !state.more;
  $("page-label").textContent = state.tasks.length
    ? `Tasks ${state.tasks[0].id}–${state.tasks[state.tasks.length - 1].id}` : "";
}

async function cancelTask(id) {
  const response = await api(`/api/tasks/${id}/cancel`, { method: "POST" });
  $("submit-message").textContent = response.ok ? `Task ${id} canceled.` : await detailOf(response);
  await refresh();
}

async function retryTask(id) {
  const headers = { "Idempotency-Key": crypto.randomUUID() };  // a repeated click: one task
  const response = await api(`/api/tasks/${id}/retry`, { method: "POST", headers });
  $("submit-message").textContent = response.ok
    ? `Task ${id} is running again as task ${(await response.json()).id}.` : await detailOf(response);
  await refresh();
}

async function deleteTask(id) {
  const response = await api(`/api/tasks/${id}`, { method: "DELETE" });
  $("submit-message").textContent = response.ok ? `Task ${id} deleted.` : await detailOf(response);
  if (id === state.selected) {
    state.selected = null;
    $("detail").hidden = true;
  }
  await refresh();
}

// -- one task --------------------------------------------------------------------------------

async function showTask(id) {
  state.selected = id;
  for (const tr of $("tasks").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.id === String(id));
  const response = await api(`/api/tasks/${id}/result`);
  if (!response.ok) return;
  const body = await response.json();
  state.shownStatus = body.status;
  $("detail").hidden = false;
  $("detail-title").textContent = `Task ${id}: ${body.status}`;
  $("detail-error").textContent = body.error || "";
  $("scene").textContent = body.result ? body.result.image_class : "—";
  const rows = (body.result ? body.result.primitives : []).map((p) => {
    const tr = document.createElement("tr");
    const cells = [p.primitive_class, p.probability.toFixed(2),
      `${p.x.toFixed(3)}, ${p.y.toFixed(3)}`, `${p.width.toFixed(3)} × ${p.height.toFixed(3)}`,
      `${Math.round(p.rotation * 180)}°`];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  $("primitives").tBodies[0].replaceChildren(...rows);
  const picture = await api(body.status === "done" ? `/api/tasks/${id}/visualization` : `/api/tasks/${id}/input`);
  if (picture.ok) {
    if (state.pictureUrl) URL.revokeObjectURL(state.pictureUrl);
    state.pictureUrl = URL.createObjectURL(await picture.blob());
    $("picture").src = state.pictureUrl;
    $("picture").alt = body.status === "done"
      ? `Task ${id} with ${rows.length} primitive${rows.length === 1 ? "" : "s"} outlined; scene ${body.result.image_class}`
      : `Task ${id}'s image`;
    $("picture-caption").textContent = body.status === "done"
      ? "Boxes drawn from the stored result." : "Waiting for the result…";
  }
}

// -- API keys (GET/POST /api/keys, DELETE /api/keys/{id}) -------------------------------------

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "never";
}

async function loadKeys() {
  const response = await api("/api/keys");
  if (!response.ok) {
    $("key-message").textContent = await detailOf(response);
    return;
  }
  const { keys } = await response.json();
  const rows = keys.map((k) => {
    const tr = document.createElement("tr");
    tr.dataset.id = k.id;
    for (const text of [k.name, when(k.created_at), when(k.last_used_at)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    const td = document.createElement("td");
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.textContent = "Revoke";
    revoke.setAttribute("aria-label", `Revoke key ${k.name}`);
    revoke.addEventListener("click", () => revokeKey(k));
    td.append(revoke);
    tr.append(td);
    return tr;
  });
  $("keys").tBodies[0].replaceChildren(...rows);
  $("keys").hidden = !rows.length;
  $("no-keys").hidden = rows.length > 0;
}

async function createKey(event) {
  event.preventDefault();
  const name = $("key-name").value.trim();
  if (!name) return;
  const response = await api("/api/keys", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name }),
  });
  if (!response.ok) {
    $("key-message").textContent = await detailOf(response);
    return;
  }
  const made = await response.json();
  $("key-name").value = "";
  $("key-message").textContent = "";
  $("new-key-name").textContent = made.name;
  $("new-key").textContent = made.key;
  $("new-key-box").hidden = false;
  await loadKeys();
}

async function revokeKey(key) {
  const response = await api(`/api/keys/${key.id}`, { method: "DELETE" });
  $("key-message").textContent = response.ok || response.status === 404
    ? `Key ${key.name} revoked.` : await detailOf(response);
  await loadKeys();
}

// -- wiring ----------------------------------------------------------------------------------

function wire() {
  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", logOut);
  $("key-form").addEventListener("submit", createKey);
  $("files").addEventListener("change", (e) => submitFiles(e.target.files));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    submitFiles(e.dataTransfer.files);
  });
  $("status-filter").addEventListener("change", () => { state.cursors = [0]; refresh(); });
  $("prev-page").addEventListener("click", () => { state.cursors.pop(); refresh(); });
  $("next-page").addEventListener("click", () => {
    state.cursors.push(state.tasks[state.tasks.length - 1].id);
    refresh();
  });
  if (state.token) start(); else $("username").focus();
}

wire();
