// The agentsmith dashboard: a small single-page app over the REST API.
//
// Routes (the URL hash): #/jobs, #/jobs/<id>, #/overview.
// The API token lives in sessionStorage only and is sent as a bearer token. Live updates
// read the SSE endpoints with fetch() and a stream parser (EventSource cannot send an
// Authorization header, and a token in the URL would end up in logs).
// Every piece of data is put on the page as text (textContent), never as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "agentsmith.token";
  const PAGE_SIZE = 50;
  const STATES = ["queued", "starting", "running", "waiting_for_input", "retrying", "succeeded", "failed", "cancelled", "timed_out"];
  const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);

  // ---- small DOM helpers -------------------------------------------------------------

  /** Builds an element; children are nodes or strings (always text). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const $ = (id) => document.getElementById(id);

  function badge(state) {
    return h("span", { class: "state state-" + state, "data-state": state }, h("span", { class: "swatch", "aria-hidden": "true" }), state.replace(/_/g, " "));
  }

  function fmtTime(ms) {
    if (!ms) return "—";
    const d = new Date(ms);
    const today = new Date();
    const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    if (d.toDateString() === today.toDateString()) return time;
    return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined || ms < 0) return "—";
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    const hr = Math.floor(m / 60);
    return hr + "h " + String(m % 60).padStart(2, "0") + "m";
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) return "—";
    if (s < 1) return Math.round(s * 1000) + " ms";
    return (s < 10 ? s.toFixed(2) : s.toFixed(1)) + " s";
  }

  /** How long a job has taken: from creation to its end (or now). */
  function duration(job) {
    const end = job.finished_at || (TERMINAL.has(job.state) ? job.updated_at : Date.now());
    return end - job.created_at;
  }

  /** A link only for http(s) URLs; anything else is shown as text. */
  function safeLink(url, text) {
    try {
      const u = new URL(url, location.href);
      if (u.protocol === "http:" || u.protocol === "https:") {
        return h("a", { href: u.href, target: "_blank", rel: "noopener noreferrer" }, text || url);
      }
    } catch (_) { /* not a URL */ }
    return h("span", {}, text || url);
  }

  // ---- the API -----------------------------------------------------------------------

  const auth = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    headers() {
      return this.token ? { Authorization: "Bearer " + this.token } : {};
    },
  };

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // Actions (POST) send a JSON body, `{}` when there is nothing to say: the API refuses
  // any other content type, which is what keeps other sites' pages from posting to it.
  async function api(path, options) {
    const opts = Object.assign({ method: "GET" }, options || {});
    opts.headers = Object.assign({ Accept: "application/json" }, auth.headers(), opts.headers || {});
    if (opts.method !== "GET") {
      opts.headers["Content-Type"] = "application/json";
      if (opts.body === undefined) opts.body = "{}";
    }
    let response;
    try {
      response = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, "network", "the dispatcher cannot be reached");
    }
    let body = null;
    try { body = await response.json(); } catch (_) { /* empty body */ }
    if (!response.ok) {
      const err = (body && body.error) || {};
      if (response.status === 401) needSignIn(auth.token ? "That token was not accepted." : "");
      throw new ApiError(response.status, err.code || "http_" + response.status, err.message || response.statusText);
    }
    return body;
  }

  /**
   * Follows an SSE endpoint with fetch(), calling onEvent(type, data, id) per event.
   * Reconnects after a drop (resuming with Last-Event-ID) unless `once` is set and the
   * server ended the stream cleanly. A `lagged` end (this reader fell behind the server's
   * bounded buffer) is not clean: it resumes at once from the event named in it.
   * Returns a function that stops it.
   */
  function follow(path, onEvent, { once = false, onState } = {}) {
    let stopped = false;
    let controller = null;
    let lastId = null;
    let delay = 1000;
    const status = (s) => onState && onState(s);

    async function run() {
      while (!stopped) {
        controller = new AbortController();
        const headers = Object.assign({ Accept: "text/event-stream" }, auth.headers());
        if (lastId) headers["Last-Event-ID"] = lastId;
        const resumedFrom = lastId;
        let clean = false;
        let lagged = false;
        try {
          const response = await fetch(path, { headers, signal: controller.signal, cache: "no-store" });
          if (response.status === 401) { needSignIn(auth.token ? "That token was not accepted." : ""); return; }
          if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
          status("live");
          delay = 1000;
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          let event = { type: "message", data: [], id: null };
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let nl;
            while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
              const line = buffer.slice(0, nl);
              buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
              if (line === "") {
                if (event.data.length) {
                  if (event.id) lastId = event.id;
                  let data = null;
                  try { data = JSON.parse(event.data.join("\n")); } catch (_) { /* not JSON */ }
                  if (event.type === "lagged") {
                    lagged = true;
                    if (data && data.resume_after) lastId = data.resume_after;
                  } else if (data) onEvent(event.type, data, event.id);
                }
                event = { type: "message", data: [], id: null };
              } else if (!line.startsWith(":")) {
                const colon = line.indexOf(":");
                const field = colon < 0 ? line : line.slice(0, colon);
                let val = colon < 0 ? "" : line.slice(colon + 1);
                if (val.startsWith(" ")) val = val.slice(1);
                if (field === "event") event.type = val;
                else if (field === "data") event.data.push(val);
                else if (field === "id") event.id = val;
              }
            }
          }
          clean = !lagged;
        } catch (e) {
          if (stopped) return;
        }
        if (clean && once) { status("ended"); return; }
        if (lagged && lastId !== resumedFrom) continue;
        status("reconnecting");
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 15000);
      }
    }
    run();
    return () => { stopped = true; if (controller) controller.abort(); };
  }

  // ---- sign-in -------------------------------------------------------------------------

  function needSignIn(message) {
    stopView();
    $("view").replaceChildren();
    $("nav").hidden = true;
    $("live").hidden = true;
    $("signout").hidden = true;
    $("signin").hidden = false;
    const err = $("signin-error");
    err.textContent = message || "";
    err.hidden = !message;
    $("token").focus();
  }

  async function signIn(ev) {
    ev.preventDefault();
    const token = $("token").value.trim();
    const button = $("signin-submit");
    button.disabled = true;
    try {
      const response = await fetch("/v1/jobs?limit=1", { headers: { Authorization: "Bearer " + token, Accept: "application/json" } });
      if (response.status === 401) {
        $("signin-error").textContent = "That token was not accepted.";
        $("signin-error").hidden = false;
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      auth.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      $("token").value = "";
      $("signin").hidden = true;
      route();
    } catch (e) {
      $("signin-error").textContent = "The dispatcher cannot be reached (" + e.message + ").";
      $("signin-error").hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  function signOut() {
    auth.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    needSignIn("");
  }

  // ---- views -----------------------------------------------------------------------------

  let cleanups = [];
  function stopView() {
    for (const f of cleanups) f();
    cleanups = [];
  }
  function onLeave(f) { cleanups.push(f); }

  function setLive(state) {
    const live = $("live");
    live.hidden = false;
    live.dataset.state = state;
    $("live-text").textContent = state === "live" ? "live" : state === "ended" ? "ended" : "reconnecting…";
  }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    return { parts, params: new URLSearchParams(query || "") };
  }

  async function route() {
    stopView();
    $("signin").hidden = true;
    $("live").hidden = true;
    const { parts, params } = parseHash();
    const page = parts[0] || "jobs";
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.classList.toggle("active", a.dataset.nav === page);
      if (a.dataset.nav === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    const view = $("view");
    view.replaceChildren(h("p", { class: "muted loading" }, "Loading…"));
    $("nav").hidden = false;
    $("signout").hidden = !auth.token;
    try {
      if (page === "jobs" && parts[1]) await jobView(view, parts[1]);
      else if (page === "overview") await overviewView(view);
      else await jobsView(view, params);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      view.replaceChildren(h("div", { class: "card error-card", role: "alert" }, h("strong", {}, "Could not load this page. "), e.message));
    }
  }

  // Jobs ----------------------------------------------------------------------------------

  const COLUMNS = ["Job", "State", "Agent", "Project", "Ticket", "Source", "Created", "Duration", "Attempt"];

  // Where a job came from: its webhook source, or the API.
  function sourceOf(job) {
    return job.origin ? job.origin.source : "api";
  }

  // The source, with the ticket or channel it came from and a link back when there is one.
  function sourceDetail(job) {
    const o = job.origin;
    if (!o) return "api";
    const where = o.source === "slack" ? "channel " + o.channel
      : o.source === "jira" ? o.issue
      : o.source === "github" ? o.repo + "#" + o.issue
      : o.source === "gitlab" ? o.project + "#" + o.issue : "";
    const text = o.source + (where ? " — " + where : "");
    return job.url && /^https?:\/\//.test(job.url) ? h("a", { href: job.url, rel: "noopener noreferrer" }, text) : text;
  }

  function jobRow(job) {
    const cell = (label, ...content) => h("td", { "data-label": label }, ...content);
    return h("tr", { "data-job": job.id, class: "row-" + job.state },
      cell("Job", h("a", { href: "#/jobs/" + encodeURIComponent(job.id), class: "mono" }, job.id)),
      cell("State", badge(job.state)),
      cell("Agent", job.agent || "—"),
      cell("Project", job.project || "—"),
      cell("Ticket", job.ticket || "—"),
      cell("Source", sourceOf(job)),
      cell("Created", h("time", { datetime: new Date(job.created_at).toISOString(), title: new Date(job.created_at).toString() }, fmtTime(job.created_at))),
      cell("Duration", h("span", { class: "duration", "data-created": job.created_at }, fmtDuration(duration(job)))),
      cell("Attempt", job.attempt + " / " + job.max_attempts),
    );
  }

  async function jobsView(view, params) {
    const filter = { state: params.get("state") || "", project: params.get("project") || "" };
    const jobs = new Map();
    let cursor = null;
    let overview = null;
    try { overview = await api("/v1/overview"); } catch (e) { if (e.status === 401) throw e; }

    const setFilter = () => {
      const q = new URLSearchParams();
      if (stateSel.value) q.set("state", stateSel.value);
      if (projectSel.value) q.set("project", projectSel.value);
      const s = q.toString();
      location.hash = "#/jobs" + (s ? "?" + s : "");
    };
    const stateSel = h("select", { id: "filter-state", onchange: setFilter },
      h("option", { value: "" }, "all states"), STATES.map((s) => h("option", { value: s }, s.replace(/_/g, " "))));
    stateSel.value = filter.state;
    const projects = (overview && overview.projects) || [];
    const projectSel = h("select", { id: "filter-project", onchange: setFilter },
      h("option", { value: "" }, "all projects"), projects.map((p) => h("option", { value: p }, p)));
    if (filter.project && !projects.includes(filter.project)) projectSel.append(h("option", { value: filter.project }, filter.project));
    projectSel.value = filter.project;

    const tbody = h("tbody", { id: "jobs-body" });
    const empty = h("p", { class: "empty muted", hidden: true }, "No jobs yet. Submit one with ", h("code", {}, "POST /v1/jobs"), " or ", h("code", {}, "agentsmith submit"), ".");
    const more = h("button", { class: "button", type: "button", hidden: true, onclick: () => load() }, "Load more");
    const count = h("span", { class: "muted count" });

    view.replaceChildren(
      h("div", { class: "page-head" },
        h("h1", {}, "Jobs"), count,
        h("div", { class: "filters" },
          h("label", {}, h("span", { class: "sr" }, "State"), stateSel),
          h("label", {}, h("span", { class: "sr" }, "Project"), projectSel))),
      h("div", { class: "card table-card" },
        h("table", { class: "jobs" },
          h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
          tbody),
        empty),
      h("div", { class: "more" }, more));

    const matches = (job) => (!filter.state || job.state === filter.state) && (!filter.project || job.project === filter.project);
    const refresh = () => {
      empty.hidden = tbody.children.length > 0;
      count.textContent = tbody.children.length ? tbody.children.length + " shown" : "";
    };

    function upsert(job, prepend) {
      const old = tbody.querySelector('tr[data-job="' + CSS.escape(job.id) + '"]');
      if (!matches(job)) { if (old) old.remove(); jobs.delete(job.id); refresh(); return; }
      jobs.set(job.id, job);
      const row = jobRow(job);
      if (old) {
        if (old.dataset.state !== job.state) row.classList.add("flash");
        old.replaceWith(row);
      } else if (prepend) {
        row.classList.add("flash");
        // Keep newest first: insert before the first row created earlier.
        const after = Array.from(tbody.children).find((r) => (jobs.get(r.dataset.job) || {}).created_at < job.created_at);
        tbody.insertBefore(row, after || null);
      } else tbody.append(row);
      row.dataset.state = job.state;
      refresh();
    }

    async function load() {
      more.disabled = true;
      const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (filter.state) q.set("state", filter.state);
      if (filter.project) q.set("project", filter.project);
      if (cursor) q.set("cursor", cursor);
      try {
        const page = await api("/v1/jobs?" + q);
        for (const job of page.jobs) upsert(job, false);
        cursor = page.next_cursor || null;
        more.hidden = !cursor;
      } finally {
        more.disabled = false;
      }
    }
    await load();

    // Live: every state change of every job; re-read the job it names.
    const pending = new Map();
    const stop = follow("/v1/events", (type, ev) => {
      if (!ev.job_id || pending.has(ev.job_id)) return;
      pending.set(ev.job_id, setTimeout(async () => {
        pending.delete(ev.job_id);
        try { upsert(await api("/v1/jobs/" + encodeURIComponent(ev.job_id)), true); } catch (_) { /* gone */ }
      }, 100));
    }, { onState: setLive });
    onLeave(stop);
    onLeave(() => { for (const t of pending.values()) clearTimeout(t); });
    const tick = setInterval(() => {
      for (const span of tbody.querySelectorAll(".duration")) {
        const job = jobs.get(span.closest("tr").dataset.job);
        if (job && !TERMINAL.has(job.state)) span.textContent = fmtDuration(duration(job));
      }
    }, 1000);
    onLeave(() => clearInterval(tick));
  }

  // Job -------------------------------------------------------------------------------------

  async function jobView(view, id) {
    let job = await api("/v1/jobs/" + encodeURIComponent(id));
    const attempts = new Map(); // attempt -> {backend, target, workload, at, state}
    let result = null;

    const head = h("div", { class: "page-head" });
    const actions = h("div", { class: "actions" });
    const cancelBtn = h("button", { id: "cancel", class: "button danger", type: "button", onclick: () => act("cancel") }, "Cancel");
    const retryBtn = h("button", { id: "retry", class: "button", type: "button", onclick: () => act("retry") }, "Retry");
    const actionMsg = h("p", { id: "action-message", class: "error", role: "alert", hidden: true });
    actions.append(cancelBtn, retryBtn);
    // The agent's open question: a button per choice, and any text.
    const questionBox = h("section", { id: "question", class: "card question", hidden: true, "aria-live": "polite" });
    // A message for the running agent (it finds it in its inbox at its next step).
    const steerText = h("input", { id: "steer-text", type: "text", maxlength: "4096", "aria-label": "Message to the agent", placeholder: "Tell the agent something while it works" });
    const steerMsg = h("p", { id: "steer-message", class: "muted", role: "status", hidden: true });
    const steerBox = h("form", { id: "steer", class: "steer", hidden: true, onsubmit: (e) => { e.preventDefault(); steer(); } },
      steerText, h("button", { id: "steer-send", class: "button", type: "submit" }, "Send"), steerMsg);
    async function steer() {
      const text = steerText.value.trim();
      if (!text) return;
      try {
        const sent = await api("/v1/jobs/" + encodeURIComponent(job.id) + "/messages", { method: "POST", body: JSON.stringify({ text: text, by: "dashboard" }) });
        steerText.value = "";
        steerMsg.textContent = "Sent (message " + sent.seq + "): the agent reads it at its next step.";
        steerMsg.className = "muted";
      } catch (e) {
        if (e.status === 401) return;
        steerMsg.textContent = "Could not send: " + e.message;
        steerMsg.className = "error";
      }
      steerMsg.hidden = false;
    }

    const facts = h("dl", { class: "facts", id: "facts" });
    const reason = h("div", { id: "reason", class: "reason", hidden: true });
    const timeline = h("ol", { class: "timeline", id: "timeline" });
    const attemptsBody = h("tbody", { id: "attempts" });
    const resultBox = h("div", { id: "result", class: "result" }, h("p", { class: "muted" }, "No result yet."));
    const log = h("pre", { id: "log", class: "log", tabindex: "0", "aria-label": "Agent log" });
    const logEmpty = h("p", { class: "muted log-empty" }, "No output yet.");
    const followBtn = h("button", { class: "button quiet small", type: "button", hidden: true, onclick: () => { stick = true; log.scrollTop = log.scrollHeight; followBtn.hidden = true; } }, "Follow log ↓");

    view.replaceChildren(
      h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")),
      head, actionMsg, reason, questionBox, steerBox,
      h("div", { class: "grid" },
        h("section", { class: "card" }, h("h2", {}, "Intent"), facts),
        h("section", { class: "card" }, h("h2", {}, "Timeline"), timeline)),
      h("section", { class: "card log-card" },
        h("div", { class: "log-head" }, h("h2", {}, "Log"), followBtn),
        logEmpty, log),
      h("div", { class: "grid" },
        h("section", { class: "card" }, h("h2", {}, "Attempts"),
          h("table", { class: "attempts" },
            h("thead", {}, h("tr", {}, ["Attempt", "Backend", "Target", "Workload", "Spawned", "Outcome"].map((c) => h("th", { scope: "col" }, c)))),
            attemptsBody)),
        h("section", { class: "card" }, h("h2", {}, "Result"), resultBox)));

    function render() {
      head.replaceChildren(
        h("h1", {}, "Job ", h("span", { class: "mono" }, job.id)),
        h("span", { id: "job-state" }, badge(job.state)),
        h("span", { class: "muted" }, "attempt " + job.attempt + " of " + job.max_attempts),
        actions);
      cancelBtn.disabled = TERMINAL.has(job.state);
      retryBtn.disabled = !TERMINAL.has(job.state);
      const row = (k, v) => [h("dt", {}, k), h("dd", {}, v || "—")];
      facts.replaceChildren(
        ...row("Task", h("span", { class: "task" }, job.task)),
        ...row("Agent", job.agent),
        ...row("Project", job.project),
        ...row("Ticket", job.ticket),
        ...row("Repository", job.repo),
        ...row("Source", sourceDetail(job)),
        ...row("Requested by", job.requester),
        ...row("Created", fmtTime(job.created_at)),
        ...row("Duration", fmtDuration(duration(job))),
        ...chainRows(job));
      if (job.reason && job.state !== "succeeded") {
        reason.hidden = false;
        reason.replaceChildren(h("strong", {}, job.state === "failed" || job.state === "timed_out" ? "Why it failed: " : "Reason: "), job.reason);
        reason.className = "reason reason-" + job.state;
      } else reason.hidden = true;
      renderAttempts();
      renderResult();
      renderQuestion();
      steerBox.hidden = TERMINAL.has(job.state);
    }

    // A follow-up's chain: the job it continues (how it ended, what it said), the chain's
    // first job (whose branch the chain works on), and the job that continues this one.
    function chainRows(job) {
      const link = (id, rel) => h("a", { href: "#/jobs/" + encodeURIComponent(id), class: "mono", "data-chain": rel }, id);
      const row = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
      const rows = [];
      if (job.follows) {
        const p = job.follows;
        rows.push(...row("Continues", h("span", { id: "chain-previous" }, link(p.job_id, "previous"), " ", badge(p.state),
          p.summary ? h("span", { class: "muted" }, " — " + p.summary) : "")));
      }
      if (job.chain && (!job.follows || job.chain !== job.follows.job_id)) rows.push(...row("First of the chain", link(job.chain, "first")));
      if (job.followed_by) rows.push(...row("Continued by", h("span", { id: "chain-next" }, link(job.followed_by, "next"))));
      return rows;
    }

    let shownQuestion = null;
    function renderQuestion() {
      const q = job.state === "waiting_for_input" ? job.question : null;
      if (!q) { questionBox.hidden = true; shownQuestion = null; return; }
      if (shownQuestion === q.attempt + ":" + q.id) return; // keep what the reader is typing
      shownQuestion = q.attempt + ":" + q.id;
      const message = h("p", { id: "answer-message", class: "error", role: "alert", hidden: true });
      const text = h("input", { id: "answer-text", type: "text", maxlength: "4096", "aria-label": "Your answer", placeholder: "Or type an answer" });
      const send = async (answer) => {
        answer = answer.trim();
        if (!answer) return;
        message.hidden = true;
        for (const b of questionBox.querySelectorAll("button")) b.disabled = true;
        try {
          job = await api("/v1/jobs/" + encodeURIComponent(job.id) + "/answer", { method: "POST", body: JSON.stringify({ text: answer, question: q.id, by: "dashboard" }) });
          render();
        } catch (e) {
          for (const b of questionBox.querySelectorAll("button")) b.disabled = false;
          if (e.status === 401) return;
          message.textContent = "Could not answer: " + e.message;
          message.hidden = false;
        }
      };
      const deadline = q.default !== undefined && q.default !== null
        ? "Without an answer by " + fmtTime(q.deadline) + " the agent goes on with “" + q.default + "”."
        : "Without an answer by " + fmtTime(q.deadline) + " the job fails.";
      questionBox.hidden = false;
      questionBox.replaceChildren(
        h("h2", {}, "The agent asks"),
        h("p", { id: "question-text", class: "question-text" }, q.text),
        h("div", { class: "choices" }, (q.choices || []).map((c) => h("button", { class: "button primary", type: "button", "data-choice": c, onclick: () => send(c) }, c))),
        h("form", { class: "free-answer", onsubmit: (e) => { e.preventDefault(); send(text.value); } },
          text, h("button", { id: "answer-send", class: "button", type: "submit" }, "Answer")),
        h("p", { class: "muted" }, deadline),
        message);
    }

    function renderAttempts() {
      const list = Array.from(attempts.entries()).sort((a, b) => a[0] - b[0]);
      attemptsBody.replaceChildren(...list.map(([n, a]) => h("tr", {},
        h("td", { "data-label": "Attempt" }, String(n)),
        h("td", { "data-label": "Backend" }, a.backend || "—"),
        h("td", { "data-label": "Target" }, a.target || "—"),
        h("td", { "data-label": "Workload", class: "mono" }, a.workload || "—"),
        h("td", { "data-label": "Spawned" }, fmtTime(a.at)),
        h("td", { "data-label": "Outcome" }, a.state ? badge(a.state) : "—"))));
      if (!list.length) attemptsBody.append(h("tr", {}, h("td", { colspan: "6", class: "muted" }, "Not spawned yet.")));
    }

    function renderResult() {
      const r = result || (job.result ? Object.assign({ exit_code: job.exit_code }, job.result) : null);
      if (!r && job.exit_code === undefined) return;
      const parts = [];
      const code = r && r.exit_code !== undefined ? r.exit_code : job.exit_code;
      if (code !== undefined && code !== null) parts.push(h("p", {}, "Exit code ", h("strong", { class: "mono", id: "exit-code" }, String(code))));
      const change = (r && r.change) || job.change;
      if (change) parts.push(renderChange(change));
      if (r && r.summary) parts.push(h("p", { class: "summary" }, r.summary));
      if (r && r.links && r.links.length) parts.push(h("ul", { class: "links" }, r.links.map((l) => h("li", {}, safeLink(l.url, l.title)))));
      if (parts.length) resultBox.replaceChildren(...parts);
    }

    // What the runner did with the agent's work: the pull request it led to, the branch it
    // pushed, or no change at all.
    function renderChange(change) {
      if (change.kind !== "pushed") return h("p", { id: "change", class: "muted" }, "No changes: nothing was pushed.");
      const pushed = "Pushed " + String(change.commit).slice(0, 7) + " to " + change.branch + " (" + change.files +
        " files, +" + change.insertions + " −" + change.deletions + ")";
      const pr = change.pull_request;
      if (pr) {
        const name = (pr.provider === "gitlab" ? "Merge request !" : "Pull request #") + pr.number + (pr.opened ? " opened" : " updated");
        return h("div", { id: "change" }, h("p", { class: "pull-request" }, safeLink(pr.url, name)), h("p", { class: "muted" }, pushed));
      }
      const why = change.pull_request_error ? " No pull request: " + change.pull_request_error : "";
      if (change.compare_url) {
        return h("div", { id: "change" }, h("p", {}, pushed + "." + why), h("p", {}, safeLink(change.compare_url, "Compare " + change.branch + " with " + change.base_branch)));
      }
      return h("p", { id: "change" }, pushed + "." + why);
    }

    async function act(action) {
      const question = action === "cancel" ? "Cancel job " + job.id + "? Its agent will be stopped." : "Run job " + job.id + " again as a new attempt?";
      if (!window.confirm(question)) return;
      actionMsg.hidden = true;
      try {
        job = await api("/v1/jobs/" + encodeURIComponent(job.id) + "/" + action, { method: "POST" });
        render();
        if (action === "retry") restartEvents();
      } catch (e) {
        if (e.status === 401) return;
        actionMsg.textContent = "Could not " + action + ": " + e.message;
        actionMsg.hidden = false;
      }
    }

    // Auto-scroll while the reader is at the bottom; stop when they scroll up.
    let stick = true;
    log.addEventListener("scroll", () => {
      stick = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
      followBtn.hidden = stick;
    });

    let lastAttemptLogged = 0;
    let seen = new Set();
    function onEvent(type, ev, id) {
      if (id) { if (seen.has(id)) return; seen.add(id); }
      if (type === "log") {
        if (ev.attempt !== lastAttemptLogged) {
          log.append(h("span", { class: "log-attempt" }, "── attempt " + ev.attempt + " ──\n"));
          lastAttemptLogged = ev.attempt;
        }
        log.append(h("span", { class: "line " + (ev.stream === "stderr" ? "stderr" : "stdout"), title: fmtTime(ev.at) }, ev.line + "\n"));
        logEmpty.hidden = true;
        if (stick) log.scrollTop = log.scrollHeight;
        return;
      }
      const item = (label, detail) => {
        timeline.append(h("li", { class: "event event-" + type },
          h("time", { datetime: new Date(ev.at).toISOString() }, fmtTime(ev.at)),
          h("span", { class: "what" }, label),
          detail ? h("span", { class: "detail" }, detail) : null));
      };
      if (type === "state") {
        item(badge(ev.state), [ev.attempt > 1 ? "attempt " + ev.attempt : null, ev.reason ? " " + ev.reason : null].filter(Boolean).join(" ·"));
        const a = attempts.get(ev.attempt);
        if (a && ev.state !== "queued") { a.state = ev.state; renderAttempts(); }
        if (ev.state !== job.state || ev.attempt !== job.attempt) {
          job = Object.assign({}, job, { state: ev.state, attempt: ev.attempt, reason: ev.reason, updated_at: ev.at, finished_at: TERMINAL.has(ev.state) ? ev.at : undefined });
          render();
          refetch();
        }
      } else if (type === "waiting") {
        item(h("span", { class: "tag" }, "waiting"), ev.reason);
      } else if (type === "spawned") {
        attempts.set(ev.attempt, { backend: ev.backend, target: ev.target, workload: ev.workload, at: ev.at, state: (attempts.get(ev.attempt) || {}).state });
        item(h("span", { class: "tag" }, "spawned"), ev.backend + " · " + (ev.target || "default") + " · " + ev.workload);
        renderAttempts();
      } else if (type === "question") {
        item(h("span", { class: "tag" }, "question"), ev.text + (ev.choices && ev.choices.length ? " (" + ev.choices.join(" / ") + ")" : ""));
        refetch();
      } else if (type === "answer") {
        item(h("span", { class: "tag" }, "answer"), (ev.defaulted ? "nobody answered in time; the default: " : (ev.by || "someone") + " answered: ") + ev.text);
      } else if (type === "say") {
        item(h("span", { class: "tag" }, "says"), ev.text);
      } else if (type === "message") {
        item(h("span", { class: "tag" }, "message"), (ev.by || "someone") + ": " + ev.text);
      } else if (type === "result") {
        result = ev;
        item(h("span", { class: "tag" }, "result"), ev.exit_code !== undefined ? "exit code " + ev.exit_code : "");
        renderResult();
      }
    }

    let refetchTimer = null;
    function refetch() {
      clearTimeout(refetchTimer);
      refetchTimer = setTimeout(async () => {
        try { job = await api("/v1/jobs/" + encodeURIComponent(job.id)); render(); } catch (_) { /* keep what we have */ }
      }, 150);
    }
    onLeave(() => clearTimeout(refetchTimer));

    let stopEvents = null;
    function restartEvents() {
      if (stopEvents) stopEvents();
      stopEvents = follow("/v1/jobs/" + encodeURIComponent(job.id) + "/events", onEvent, { once: true, onState: setLive });
    }
    onLeave(() => stopEvents && stopEvents());
    render();
    restartEvents();
    const tick = setInterval(() => { if (!TERMINAL.has(job.state)) render(); }, 1000);
    onLeave(() => clearInterval(tick));
  }

  // Overview ----------------------------------------------------------------------------------

  async function overviewView(view) {
    const body = h("div", { id: "overview" });
    view.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Overview"), h("span", { class: "muted" }, "refreshes every 5 s")), body);

    const stat = (label, value, note, id) => h("div", { class: "stat card", id },
      h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, value), note ? h("div", { class: "stat-note muted" }, note) : null);
    const health = (name, r, extra) => h("li", { class: r.ok ? "ok" : "bad" },
      h("span", { class: "swatch", "aria-hidden": "true" }), h("strong", {}, name + ": "), r.ok ? "reachable" : "unreachable", extra ? " (" + extra + ")" : "", r.ok ? "" : " — " + (r.error || ""));

    async function load() {
      const o = await api("/v1/overview");
      const depth = o.queue.ready + o.queue.waiting + o.queue.delayed;
      const pct = o.queue.max_concurrent_jobs ? Math.min(100, Math.round((o.queue.admitted / o.queue.max_concurrent_jobs) * 100)) : 0;
      const meter = h("div", { class: "meter", role: "meter", "aria-valuemin": "0", "aria-valuemax": String(o.queue.max_concurrent_jobs), "aria-valuenow": String(o.queue.admitted) }, h("span", { class: "fill fill-" + Math.round(pct / 10) * 10 }));
      const stateTable = (counts, caption) => h("table", { class: "states" },
        h("caption", {}, caption),
        h("tbody", {}, STATES.filter((s) => s in counts).map((s) => h("tr", {}, h("td", {}, badge(s)), h("td", { class: "num" }, String(counts[s]))))));
      const latencyTable = (id, caption, rows) => h("table", { class: "latency", id },
        h("caption", {}, caption),
        h("thead", {}, h("tr", {}, ["", "observed", "p50", "p90", "p99"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows));
      const lat = (name, p) => h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "num" }, String(p.count)),
        h("td", { class: "num" }, fmtSeconds(p.p50)), h("td", { class: "num" }, fmtSeconds(p.p90)), h("td", { class: "num" }, fmtSeconds(p.p99)));
      body.replaceChildren(
        h("div", { class: "stats" },
          stat("Queue depth", String(depth), o.queue.ready + " ready · " + o.queue.waiting + " waiting for a slot · " + o.queue.delayed + " retrying later", "queue-depth"),
          h("div", { class: "stat card", id: "admitted" },
            h("div", { class: "stat-label" }, "Admitted"),
            h("div", { class: "stat-value" }, o.queue.admitted + " / " + o.queue.max_concurrent_jobs), meter,
            h("div", { class: "stat-note muted" }, "starting or running, against queue.max_concurrent_jobs")),
          stat("Last hour", String(o.last_hour.total), "jobs created" + (o.last_hour.truncated ? " (at least)" : ""), "last-hour"),
          h("div", { class: "stat card" }, h("div", { class: "stat-label" }, "Health"),
            h("ul", { class: "health", id: "health" }, health("Redis", o.redis), health("Spawner", o.spawner, o.backend),
              o.draining ? h("li", { class: "bad" }, h("span", { class: "swatch" }), "draining: shutting down") : null))),
        h("section", { class: "card", id: "targets" },
          h("table", { class: "targets" },
            h("caption", {}, "Spawner targets"),
            h("thead", {}, h("tr", {}, ["target", "backend", "state", "jobs", "cap"].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, (o.targets || []).map((t) => h("tr", { "data-target": t.name },
              h("th", { scope: "row" }, t.name), h("td", {}, t.backend),
              h("td", { class: t.state === "down" ? "bad" : "" }, t.state + (t.error ? ": " + t.error : "")),
              h("td", { class: "num" }, t.jobs == null ? "—" : String(t.jobs)),
              h("td", { class: "num" }, t.max_concurrent_jobs ? String(t.max_concurrent_jobs) : "none")))))),
        h("div", { class: "grid three" },
          h("section", { class: "card" }, stateTable(o.last_hour.by_state, "Jobs created in the last hour, by state now")),
          h("section", { class: "card" }, stateTable(o.current, "Jobs now active, by state")),
          h("section", { class: "card" }, stateTable(o.entered, "Jobs that ever entered each state"))),
        h("section", { class: "card", id: "latency" },
          latencyTable("stages", "Latency of each stage, last hour", [
            lat("Acknowledge (webhook received → answered)", o.latency_last_hour.acknowledge),
            lat("Queue (submitted → admitted)", o.latency_last_hour.queue),
            lat("Spawn (admitted → workload created)", o.latency_last_hour.spawn),
            lat("Start (workload created → agent running)", o.latency_last_hour.start),
            lat("Run (agent running → ended)", o.latency_last_hour.run),
            lat("Reply (ended → final reply delivered)", o.latency_last_hour.reply)]),
          latencyTable("end-to-end", "Latency of whole jobs, since this dispatcher started", [
            lat("End to end (submitted → ended)", o.latency.end_to_end)]),
          h("p", { class: "muted small" }, "As this dispatcher observed them, estimated from the histogram buckets /metrics shows; the stages over the last hour, to the minute.")));
    }
    await load();
    const timer = setInterval(() => load().catch(() => {}), 5000);
    onLeave(() => clearInterval(timer));
    $("live").hidden = true;
  }

  // ---- start -------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", signOut);
    window.addEventListener("hashchange", route);
    route();
  });
})();
