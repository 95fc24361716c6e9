/* dapi console: browse the lake, run SQL, page, chart and download (docs/console.md).
 * Our own code, no framework, no request outside this origin. The API key lives in
 * sessionStorage only and goes out as the x-api-key header of fetch, never in a URL. */
"use strict";

(function () {
  const PAGE_ROWS = 100;
  const CUT = 80; /* characters shown of a long value before "…" */
  const HISTORY_MAX = 25;
  const KEY_ITEM = "dapi.key"; /* sessionStorage */
  const SQL_ITEM = "dapi.sql"; /* localStorage */
  const HISTORY_ITEM = "dapi.history"; /* localStorage */

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  };

  /* ---- storage (a browser without storage still works, it just forgets) ---------------- */
  function store(kind) {
    try {
      return kind === "session" ? window.sessionStorage : window.localStorage;
    } catch (e) {
      return null;
    }
  }
  function getItem(kind, name) {
    const s = store(kind);
    try { return s ? s.getItem(name) : null; } catch (e) { return null; }
  }
  function setItem(kind, name, value) {
    const s = store(kind);
    try {
      if (!s) return;
      if (value === null) s.removeItem(name); else s.setItem(name, value);
    } catch (e) { /* full or refused: not kept */ }
  }

  /* ---- numbers kept as the server wrote them --------------------------------------------
   * A page's numbers can be exact integers beyond 2^53 or decimals such as 12.50: where the
   * browser gives JSON.parse's reviver the source text, a number is kept as a Num with its
   * text (shown as sent) and its value (for charts). */
  class Num {
    constructor(text, value) { this.text = text; this.value = value; }
    toString() { return this.text; }
  }
  function parseJson(text) {
    return JSON.parse(text, function (k, v, ctx) {
      if (typeof v === "number" && ctx && typeof ctx.source === "string") return new Num(ctx.source, v);
      if (typeof v === "number") return new Num(String(v), v);
      return v;
    });
  }
  const plain = (v) => (v instanceof Num ? v.value : v);

  /* ---- the API ------------------------------------------------------------------------- */
  let key = getItem("session", KEY_ITEM) || "";

  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      super((body && body.error) || "HTTP " + status);
      this.status = status;
      this.body = body || {};
      this.retryAfter = retryAfter;
    }
  }

  async function api(method, path, body) {
    const headers = { "x-api-key": key };
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, { error: "The server cannot be reached", details: String(e.message || e) });
    }
    const text = await resp.text();
    let data = null;
    if (text && (resp.headers.get("Content-Type") || "").startsWith("application/json")) {
      try { data = parseJson(text); } catch (e) { data = { error: "Unreadable answer", details: text.slice(0, 300) }; }
    }
    if (!resp.ok) throw new ApiError(resp.status, data, resp.headers.get("Retry-After"));
    return data;
  }
  const seg = (s) => encodeURIComponent(s);

  /* An error as a user reads it: a headline, more words, and the server's details. */
  function explain(err, where) {
    const b = err.body || {};
    const details = b.details !== undefined && b.details !== null ? String(b.details) : "";
    switch (err.status) {
      case 0:
        return { head: "The server cannot be reached.", text: "Is dapi still running? " + details };
      case 401:
        return {
          head: "The server refused the API key: " + (b.error || "unauthorized") + (details ? " (" + details + ")." : "."),
          text: "Enter a key above. A key comes from whoever runs this dapi server: `dapi keys add --name NAME` " +
            "prints a new one, a development server prints its key at start (state/dev-key), and " +
            "DAPI_API_KEYS or --api-keys-file list plain keys (docs/auth.md).",
        };
      case 403:
        return { head: "This key may not read that.", text: details || b.error || "" };
      case 429:
        return {
          head: "Too many requests for this key.",
          text: "Wait " + (err.retryAfter || "a few") + " s and try again" + (details ? " (" + details + ")." : "."),
        };
      case 503:
        return { head: "The server is busy.", text: "Try again in " + (err.retryAfter || "a few") + " s. " + details };
      case 410:
        return { head: "The query was cancelled.", text: details };
      case 413:
        return { head: "Too large: " + (b.error || ""), text: details };
      case 504:
        return { head: "The query took too long.", text: details };
      default:
        if (b.error === "Invalid SQL query" || b.error === "Query execution failed")
          return { head: b.error === "Invalid SQL query" ? "The SQL was refused." : "The query failed.", sql: details };
        return { head: (where ? where + ": " : "") + (b.error || "HTTP " + err.status), text: details };
    }
  }

  /* Where DuckDB's message places the error: "LINE 3: ..." with a caret line under it, or
   * "at line L, column C" / "at position P". Returns {line, col} (1-based) or null. */
  function errorPosition(details, sql) {
    let m = /at line (\d+), column (\d+)/i.exec(details);
    if (m) return { line: +m[1], col: +m[2] };
    m = /LINE (\d+): (.*)\n( *)\^/.exec(details);
    if (m) {
      const line = +m[1];
      let col = m[3].length - ("LINE " + m[1] + ": ").length + 1;
      const shown = m[2];
      const lines = sql.split("\n");
      const text = lines[line - 1] || "";
      /* a long line is shown cut, starting with "..." somewhere inside it */
      if (shown.startsWith("...")) {
        const at = text.indexOf(shown.slice(3, 23));
        if (at >= 0) col = at + col - 3;
      }
      return { line, col: Math.max(1, col) };
    }
    m = /at position (\d+)/i.exec(details);
    if (m) {
      const pos = +m[1];
      const before = sql.slice(0, pos).split("\n");
      return { line: before.length, col: before[before.length - 1].length + 1 };
    }
    return null;
  }

  function showError(box, err, opts) {
    const x = explain(err, opts && opts.where);
    box.replaceChildren(el("p", { class: "head", text: x.head }));
    if (x.text) box.append(el("p", { text: x.text }));
    if (x.sql) {
      const sql = (opts && opts.sql) || "";
      const pos = errorPosition(x.sql, sql);
      if (pos) {
        box.append(el("p", { class: "pos", text: "At line " + pos.line + ", column " + pos.col + " of the SQL." }));
        selectAt(pos);
      }
      box.append(el("pre", { text: x.sql }));
    }
    box.hidden = false;
  }
  function clearError(box) {
    box.hidden = true;
    box.replaceChildren();
  }

  /* ---- key ----------------------------------------------------------------------------- */
  function keyShown() {
    $("key-state").textContent = key ? "Key set for this tab" : "No key yet";
    $("key").value = key;
  }
  /* What one key showed is not left on screen for another. */
  function forgetShown() {
    shown = null;
    $("result").hidden = true;
    $("table-info").hidden = true;
    clearError($("error"));
  }
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const was = key;
    key = $("key").value.trim();
    if (key !== was) forgetShown();
    setItem("session", KEY_ITEM, key || null);
    keyShown();
    loadLayers();
  });
  $("key-forget").addEventListener("click", () => {
    key = "";
    setItem("session", KEY_ITEM, null);
    keyShown();
    forgetShown();
    $("layers").replaceChildren();
    $("endpoint-list").replaceChildren();
    $("endpoint-form").hidden = true;
    $("endpoints").hidden = true;
    $("layers-note").textContent = "Enter a key to list the tables it may read.";
    $("layers-note").hidden = false;
    clearError($("key-error"));
  });
  /* A refused key is said once, at the top, whichever call found it. */
  function keyRefused(err) {
    if (err.status !== 401) return false;
    showError($("key-error"), err);
    $("key-state").textContent = "Key refused";
    return true;
  }

  /* ---- side panel: layers and tables --------------------------------------------------- */
  const quoteIdent = (s) => '"' + s.replace(/"/g, '""') + '"';

  async function loadLayers() {
    const box = $("layers"), note = $("layers-note");
    box.replaceChildren();
    if (!key) return;
    note.textContent = "Loading…";
    note.hidden = false;
    try {
      const data = await api("GET", "/api/layers");
      clearError($("key-error"));
      $("key-state").textContent = "Key set for this tab";
      const layers = data.layers || [];
      note.hidden = layers.length > 0;
      note.textContent = layers.length ? "" : "This key may read no table.";
      for (const layer of layers) {
        const list = el("ul", { "aria-label": "Tables of " + layer.name });
        for (const t of layer.tables) {
          const b = el("button", { type: "button", class: "table-link", "data-layer": layer.name, "data-table": t.name, text: t.name });
          b.addEventListener("click", () => pickTable(layer.name, t.name, b));
          list.append(el("li", {}, b));
        }
        box.append(el("p", { class: "layer-name", text: layer.name }), list);
      }
      loadEndpoints(); /* (once the key is known to be good: a refused one is said once) */
    } catch (err) {
      if (!keyRefused(err)) {
        const x = explain(err, "Tables");
        note.textContent = x.head + (x.text ? " " + x.text : "");
      } else note.textContent = "No tables: the key was refused.";
    }
  }
  $("layers-reload").addEventListener("click", loadLayers); /* (and the endpoints) */

  /* ---- endpoints (GET /api/endpoints): named queries called with typed values ------------ */
  async function loadEndpoints() {
    const section = $("endpoints"), list = $("endpoint-list");
    list.replaceChildren();
    $("endpoint-form").hidden = true;
    section.hidden = true;
    if (!key) return;
    let data;
    try {
      data = await api("GET", "/api/endpoints");
    } catch (err) {
      return; /* (a server without endpoints, or a refused key: the tables say why) */
    }
    const eps = (data && data.endpoints) || [];
    for (const ep of eps) {
      const b = el("button", { type: "button", class: "endpoint-link", "data-endpoint": ep.name, text: ep.name });
      b.addEventListener("click", () => pickEndpoint(ep, b));
      list.append(el("li", {}, b));
    }
    section.hidden = eps.length === 0;
  }

  let endpoint = null;
  function pickEndpoint(ep, button) {
    for (const b of document.querySelectorAll(".endpoint-link")) b.removeAttribute("aria-current");
    button.setAttribute("aria-current", "true");
    endpoint = ep;
    $("endpoint-name").textContent = ep.name;
    $("endpoint-desc").textContent = ep.description || "";
    const box = $("endpoint-params");
    box.replaceChildren();
    for (const p of ep.params || []) {
      const id = "ep-" + p.name;
      const def = p.default === null || p.default === undefined ? "" :
        Array.isArray(p.default) ? p.default.map(String).join(", ") : String(plain(p.default));
      const rules = [p.type + (p.list ? "[] (comma-separated)" : "")];
      if (p.required) rules.push("required");
      if (p.min !== null && p.min !== undefined) rules.push("min " + plain(p.min));
      if (p.max !== null && p.max !== undefined) rules.push("max " + plain(p.max));
      if (p.enum) rules.push("one of " + p.enum.join(", "));
      if (p.pattern) rules.push("pattern " + p.pattern);
      const input = el("input", { id, name: p.name, "aria-describedby": id + "-help", placeholder: def, autocomplete: "off" });
      if (p.required) input.required = true;
      box.append(el("label", { for: id, text: p.name }), input,
        el("p", { id: id + "-help", class: "note", text: (p.description ? p.description + " · " : "") + rules.join(" · ") }));
    }
    $("endpoint-form").hidden = false;
  }

  $("endpoint-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const ep = endpoint;
    if (!ep) return;
    const qs = new URLSearchParams();
    for (const p of ep.params || []) {
      const v = $("ep-" + p.name).value.trim();
      if (!v) continue; /* its default, or null */
      if (p.list) for (const one of v.split(",")) qs.append(p.name, one.trim());
      else qs.append(p.name, v);
    }
    const q = qs.toString();
    run(() => api("GET", "/api/endpoints/" + seg(ep.name) + (q ? "?" + q : "")), null);
  });

  async function pickTable(layer, table, button) {
    for (const b of document.querySelectorAll(".table-link")) b.removeAttribute("aria-current");
    button.setAttribute("aria-current", "true");
    setSql("SELECT * FROM " + quoteIdent(layer) + "." + quoteIdent(table) + " LIMIT 100");
    $("f-layer").value = layer;
    $("f-table").value = table;
    const info = $("table-info"), body = $("columns-table").tBodies[0];
    $("table-info-title").textContent = layer + "." + table;
    $("table-info-meta").textContent = "Loading…";
    body.replaceChildren();
    info.hidden = false;
    try {
      const d = await api("GET", "/api/layers/" + seg(layer) + "/tables/" + seg(table));
      const rows = d.row_count === null ? "unknown" : (d.row_count_exact ? "" : "about ") + String(d.row_count);
      $("table-info-meta").textContent = rows + " rows · " + d.kind + " · " + d.files + " file" + (plain(d.files) === 1 ? "" : "s");
      for (const c of d.columns)
        body.append(el("tr", {}, el("td", { text: c.name }), el("td", { text: c.type })));
    } catch (err) {
      keyRefused(err);
      const x = explain(err, "Columns");
      $("table-info-meta").textContent = x.head + " " + (x.text || "");
    }
  }

  /* ---- editor: text kept across reloads, highlighted, Ctrl/Cmd+Enter runs -------------- */
  const sqlBox = $("sql"), hl = $("sql-hl");
  const KEYWORDS = new Set(("select from where group by order having limit offset join left right inner outer full " +
    "cross on as and or not in is null like ilike between case when then else end distinct union all except " +
    "intersect with values asc desc true false cast over partition window qualify using natural exists any " +
    "filter within array struct map interval").split(" "));
  const TOKEN = /(--[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|('(?:[^']|'')*'?)|("(?:[^"]|"")*"?)|(\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)/gi;

  function highlight() {
    const text = sqlBox.value;
    const out = [];
    let last = 0, m;
    TOKEN.lastIndex = 0;
    while ((m = TOKEN.exec(text))) {
      if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
      let cls = null;
      if (m[1]) cls = "hl-cmt";
      else if (m[2]) cls = "hl-str";
      else if (m[3]) cls = "hl-id";
      else if (m[4]) cls = "hl-num";
      else if (KEYWORDS.has(m[5].toLowerCase())) cls = "hl-kw";
      out.push(cls ? el("span", { class: cls, text: m[0] }) : document.createTextNode(m[0]));
      last = TOKEN.lastIndex;
    }
    out.push(document.createTextNode(text.slice(last) + "\n"));
    hl.replaceChildren(...out);
    hl.scrollTop = sqlBox.scrollTop;
  }
  function setSql(text) {
    sqlBox.value = text;
    setItem("local", SQL_ITEM, text);
    highlight();
  }
  function selectAt(pos) {
    const lines = sqlBox.value.split("\n");
    let at = 0;
    for (let i = 0; i < pos.line - 1 && i < lines.length; i++) at += lines[i].length + 1;
    at = Math.min(sqlBox.value.length, at + pos.col - 1);
    sqlBox.setSelectionRange(at, Math.min(sqlBox.value.length, at + 1));
  }
  sqlBox.addEventListener("input", () => {
    setItem("local", SQL_ITEM, sqlBox.value);
    highlight();
  });
  sqlBox.addEventListener("scroll", () => { hl.scrollTop = sqlBox.scrollTop; });
  sqlBox.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      runSql();
    }
  });

  /* ---- running a query ----------------------------------------------------------------- */
  let current = null; /* {slug, sql, started, timer, cancelled} of the query on screen */
  let shown = null; /* {slug, columns, rows, pages, page, took, data} of the result shown */

  const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
  const secs = (ms) => (ms < 10000 ? (ms / 1000).toFixed(1) : Math.round(ms / 1000)) + " s";

  const create = (body) => () => api("POST", "/api/queries", body);
  function runSql() {
    const sql = sqlBox.value;
    if (!sql.trim()) return;
    run(create({ sql_query: sql }), sql);
  }
  $("run").addEventListener("click", runSql);
  $("table-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = { layer: $("f-layer").value.trim(), table: $("f-table").value.trim() };
    const limit = $("f-limit").value.trim();
    if (limit) body.limit = limit;
    run(create(body), null);
  });

  function runState(text) { $("run-state").textContent = text; }

  /* Runs a query: start() creates it (POST /api/queries, or an endpoint's call) and answers
   * its slug; then its state is followed until it ends. sql: the text for the history, or
   * null (an endpoint's call is not kept there: its SQL needs the call's values). */
  async function run(start, sql) {
    if (current && !current.done) return; /* one at a time: Cancel first */
    const errBox = $("error");
    clearError(errBox);
    const q = { slug: null, sql: sql || "", started: performance.now(), done: false, state: "sending" };
    current = q;
    $("run").disabled = true;
    $("f-run").disabled = true;
    q.timer = setInterval(() => tick(q), 100);
    tick(q);
    try {
      const made = await start();
      q.slug = made.query_slug;
      q.sql = made.sql_query || "";
      $("cancel").disabled = false;
      /* the status says queued, running, then how it ended */
      let st;
      for (let wait = 100; ; wait = Math.min(wait * 1.5, 1000)) {
        st = await api("GET", "/api/queries/" + seg(q.slug));
        q.state = st.state;
        tick(q);
        if (st.state !== "queued" && st.state !== "running") break;
        if (q.cancelled) { await sleep(50); continue; }
        await sleep(wait);
      }
      const took = performance.now() - q.started;
      if (st.state === "succeeded") {
        remember(q.sql, "succeeded", plain(st.rows));
        await showResult(q.slug, st, took);
        runState("Succeeded in " + secs(took) + ".");
      } else {
        remember(q.sql, st.state, null);
        const e = st.error || {};
        const err = new ApiError(st.state === "cancelled" ? 410 : 400, { error: e.message, details: e.details });
        showError(errBox, err, { sql: q.sql });
        runState(st.state === "cancelled" ? "Cancelled after " + secs(took) + "." : "Failed after " + secs(took) + ".");
      }
    } catch (err) {
      if (!keyRefused(err)) showError(errBox, err, { sql: q.sql });
      runState("");
      if (err.status === 400) remember(q.sql, "refused", null);
      else if (err.status) remember(q.sql, "not run (HTTP " + err.status + ")", null);
    } finally {
      q.done = true;
      clearInterval(q.timer);
      $("run").disabled = false;
      $("f-run").disabled = false;
      $("cancel").disabled = true;
    }
  }

  function tick(q) {
    if (q.done) return;
    const words = { sending: "Sending", queued: "Queued", running: "Running" };
    runState((words[q.state] || q.state) + (q.cancelled ? " (cancelling)" : "") + " · " + secs(performance.now() - q.started));
  }

  $("cancel").addEventListener("click", async () => {
    const q = current;
    if (!q || q.done || !q.slug) return;
    q.cancelled = true;
    $("cancel").disabled = true;
    tick(q);
    try {
      await api("DELETE", "/api/queries/" + seg(q.slug));
    } catch (err) {
      if (err.status !== 404) showError($("error"), err, { where: "Cancel" });
    }
  });

  /* ---- the result table ---------------------------------------------------------------- */
  const NUMERIC = /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|DOUBLE|REAL|DECIMAL)/;

  async function showResult(slug, st, took) {
    shown = {
      slug,
      columns: st.columns || [],
      rows: plain(st.rows) || 0,
      pages: Math.max(1, plain(st.pages) || 0),
      page: 1,
      took,
    };
    $("result").hidden = false;
    $("dl-state").textContent = "";
    await showPage(1);
    chartOptions();
  }

  async function showPage(n) {
    const s = shown;
    if (!s) return;
    n = Math.max(1, Math.min(n, s.pages));
    let data;
    try {
      data = await api("GET", "/api/queries/" + seg(s.slug) + "/results?page_number=" + n);
    } catch (err) {
      if (!keyRefused(err)) showError($("error"), err, { where: "Page " + n });
      return;
    }
    s.page = n;
    s.data = data.data || [];
    if (!s.columns.length && s.data.length) s.columns = Object.keys(s.data[0]).map((name) => ({ name, type: "" }));
    drawTable(s);
    $("result-summary").textContent = (s.rows === 0 ? "No rows" : s.rows + " row" + (s.rows === 1 ? "" : "s") + " in " +
      s.pages + " page" + (s.pages === 1 ? "" : "s")) + " · the query took " + secs(s.took) + " · " + s.slug;
    $("p-where").textContent = "Page " + n + " of " + s.pages;
    $("p-first").disabled = $("p-prev").disabled = n <= 1;
    $("p-next").disabled = $("p-last").disabled = n >= s.pages;
  }
  $("p-first").addEventListener("click", () => showPage(1));
  $("p-prev").addEventListener("click", () => showPage(shown.page - 1));
  $("p-next").addEventListener("click", () => showPage(shown.page + 1));
  $("p-last").addEventListener("click", () => showPage(shown.pages));

  function cellText(v) {
    if (v instanceof Num) return v.text;
    if (typeof v === "string") return v;
    return JSON.stringify(v, (k, x) => (x instanceof Num ? (JSON.rawJSON ? JSON.rawJSON(x.text) : x.value) : x));
  }

  function drawTable(s) {
    const table = $("rows");
    const head = el("tr");
    for (const c of s.columns)
      head.append(el("th", { scope: "col" }, el("span", { class: "name", text: c.name }), el("span", { class: "type", text: c.type })));
    table.tHead.replaceChildren(head);
    const body = [];
    for (const row of s.data) {
      const tr = el("tr");
      for (const c of s.columns) {
        const v = row[c.name];
        const td = el("td");
        if (v === null || v === undefined) {
          td.append(el("span", { class: "null", text: "NULL" }));
        } else if (v === "") {
          td.append(el("span", { class: "empty", text: "(empty)", title: "an empty string" }));
        } else {
          if (v instanceof Num || NUMERIC.test(c.type)) td.className = "num";
          const text = cellText(v);
          if (text.length > CUT) {
            const b = el("button", { type: "button", class: "cut", title: text, "aria-expanded": "false" },
              text.slice(0, CUT), el("span", { class: "more", text: "…" }));
            b.addEventListener("click", () => {
              const open = b.getAttribute("aria-expanded") === "true";
              b.setAttribute("aria-expanded", open ? "false" : "true");
              b.replaceChildren(open ? text.slice(0, CUT) : text, el("span", { class: "more", text: open ? "…" : " ▴" }));
              td.classList.toggle("wrap", !open);
            });
            td.append(b);
          } else td.textContent = text;
        }
        tr.append(td);
      }
      body.push(tr);
    }
    table.tBodies[0].replaceChildren(...body);
  }

  /* ---- downloads: fetched with the key, saved through a Blob (the key never in a URL) ---- */
  for (const b of document.querySelectorAll(".downloads button[data-format]")) {
    b.addEventListener("click", async () => {
      if (!shown) return;
      const format = b.getAttribute("data-format");
      const state = $("dl-state");
      state.textContent = "Preparing " + format + "…";
      try {
        const resp = await fetch("/api/queries/" + seg(shown.slug) + "/export?format=" + format, {
          headers: { "x-api-key": key }, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
        });
        if (!resp.ok) {
          let body = null;
          try { body = parseJson(await resp.text()); } catch (e) { body = null; }
          throw new ApiError(resp.status, body, resp.headers.get("Retry-After"));
        }
        const blob = await resp.blob();
        const url = URL.createObjectURL(blob);
        const a = el("a", { href: url, download: shown.slug + "." + format });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 30000);
        state.textContent = "Downloaded " + shown.slug + "." + format + " (" + blob.size + " bytes).";
      } catch (err) {
        const x = explain(err, "Download");
        state.textContent = x.head + (x.text ? " " + x.text : "");
      }
    });
  }

  /* ---- chart: the page's own SVG ------------------------------------------------------- */
  const SVGNS = "http://www.w3.org/2000/svg";
  const COLORS = ["#0b5cad", "#c25e00", "#2e7d32", "#8e24aa", "#c62828", "#00838f"];
  const svg = (tag, attrs) => {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  };

  function chartOptions() {
    const s = shown;
    const label = $("c-label"), values = $("c-values");
    label.replaceChildren();
    values.replaceChildren(el("legend", { text: "Values" }));
    const rows = s.data || [];
    const numeric = s.columns.filter((c) => NUMERIC.test(c.type) ||
      (rows.length && rows.every((r) => r[c.name] === null || r[c.name] instanceof Num)));
    s.columns.forEach((c, i) => label.append(el("option", { value: String(i), text: c.name })));
    const firstText = s.columns.findIndex((c) => !numeric.includes(c));
    label.value = String(firstText >= 0 ? firstText : 0);
    numeric.forEach((c, i) => {
      const id = "c-v-" + i;
      const box = el("input", { type: "checkbox", id, value: c.name });
      if (i < 3 && s.columns.indexOf(c) !== +label.value) box.checked = true;
      values.append(el("span", {}, box, " ", el("label", { for: id, text: c.name })));
    });
    $("chart-note").textContent = numeric.length ? "" : "No numeric column to chart.";
    $("chart").replaceChildren();
  }

  $("chart-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    drawChart();
  });

  function drawChart() {
    const s = shown, box = $("chart");
    if (!s) return;
    const labelCol = s.columns[+$("c-label").value];
    const series = [...$("c-values").querySelectorAll("input:checked")].map((i) => i.value);
    const kind = $("c-kind").value;
    const rows = (s.data || []).slice(0, 60);
    if (!labelCol || !series.length || !rows.length) {
      $("chart-note").textContent = "Pick a label column and at least one value column.";
      box.replaceChildren();
      return;
    }
    const labels = rows.map((r) => (r[labelCol.name] === null ? "NULL" : cellText(r[labelCol.name])));
    const val = (r, name) => { const v = plain(r[name]); return typeof v === "number" && isFinite(v) ? v : null; };
    let lo = 0, hi = 0;
    for (const r of rows) for (const n of series) { const v = val(r, n); if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
    if (hi === lo) hi = lo + 1;
    const W = 720, H = 320, L = 64, R = 12, T = 28, B = 70;
    const pw = W - L - R, ph = H - T - B;
    const y = (v) => T + ph - ((v - lo) / (hi - lo)) * ph;
    const step = pw / rows.length;
    const title = kind + " chart of " + series.join(", ") + " by " + labelCol.name + " (" + rows.length + " rows of page " + s.page + ")";
    const root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": title });
    root.append(svg("title", {}));
    root.lastChild.textContent = title;
    for (let i = 0; i <= 4; i++) { /* grid lines and the value axis */
      const v = lo + ((hi - lo) * i) / 4, yy = y(v);
      root.append(svg("line", { class: "gridline", x1: L, x2: W - R, y1: yy, y2: yy }));
      const t = svg("text", { x: L - 6, y: yy + 4, "text-anchor": "end" });
      t.textContent = Number(v.toPrecision(4)).toLocaleString();
      root.append(t);
    }
    root.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: T + ph }));
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(Math.max(lo, 0)), y2: y(Math.max(lo, 0)) }));
    const every = Math.ceil(rows.length / 20);
    labels.forEach((text, i) => {
      if (i % every) return;
      const x = L + step * (i + 0.5);
      const t = svg("text", { x, y: T + ph + 14, "text-anchor": "end", transform: "rotate(-40 " + x + " " + (T + ph + 14) + ")" });
      t.textContent = text.length > 14 ? text.slice(0, 13) + "…" : text;
      root.append(t);
    });
    series.forEach((name, k) => {
      const color = COLORS[k % COLORS.length];
      if (kind === "bar") {
        const bw = (step * 0.8) / series.length;
        rows.forEach((r, i) => {
          const v = val(r, name);
          if (v === null) return;
          const y0 = y(Math.max(lo, 0)), y1 = y(v);
          const rect = svg("rect", { x: L + step * i + step * 0.1 + bw * k, y: Math.min(y0, y1), width: Math.max(1, bw - 1), height: Math.max(1, Math.abs(y1 - y0)), fill: color });
          const tip = svg("title", {});
          tip.textContent = labels[i] + ": " + name + " = " + cellText(r[name]);
          rect.append(tip);
          root.append(rect);
        });
      } else {
        const pts = rows.map((r, i) => [L + step * (i + 0.5), val(r, name)]).filter((p) => p[1] !== null);
        root.append(svg("polyline", { points: pts.map((p) => p[0].toFixed(1) + "," + y(p[1]).toFixed(1)).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
        for (const p of pts) root.append(svg("circle", { cx: p[0], cy: y(p[1]), r: 2.5, fill: color }));
      }
      const lx = L + k * 140; /* legend */
      root.append(svg("rect", { x: lx, y: 8, width: 12, height: 12, fill: color }));
      const t = svg("text", { x: lx + 16, y: 18 });
      t.textContent = name.length > 18 ? name.slice(0, 17) + "…" : name;
      root.append(t);
    });
    $("chart-note").textContent = "Drawn from the rows of page " + s.page + (s.data.length > rows.length ? " (its first " + rows.length + ")" : "") + ".";
    box.replaceChildren(root);
  }

  /* ---- history (localStorage): this browser's recent queries, re-runnable -------------- */
  function history() {
    try {
      const h = JSON.parse(getItem("local", HISTORY_ITEM) || "[]");
      return Array.isArray(h) ? h : [];
    } catch (e) { return []; }
  }
  function remember(sql, state, rows) {
    if (!sql) return;
    const h = history().filter((e) => e.sql !== sql);
    h.unshift({ sql, state, rows, at: new Date().toISOString() });
    setItem("local", HISTORY_ITEM, JSON.stringify(h.slice(0, HISTORY_MAX)));
    drawHistory();
  }
  function drawHistory() {
    const list = $("history");
    const items = history().map((e, i) => {
      const again = el("button", { type: "button", class: "again", text: "Run again", "aria-label": "Run again: query " + (i + 1) });
      again.addEventListener("click", () => { setSql(e.sql); runSql(); });
      const edit = el("button", { type: "button", class: "edit", text: "Edit", "aria-label": "Edit: query " + (i + 1) });
      edit.addEventListener("click", () => { setSql(e.sql); sqlBox.focus(); });
      const when = new Date(e.at);
      const meta = e.state + (e.rows !== null && e.rows !== undefined ? " · " + e.rows + " rows" : "") + " · " + when.toLocaleString();
      return el("li", {}, el("code", { text: e.sql.replace(/\s+/g, " ").trim() }), el("span", { class: "meta", text: meta + " " }), again, " ", edit);
    });
    list.replaceChildren(...items);
  }
  $("history-clear").addEventListener("click", () => {
    setItem("local", HISTORY_ITEM, null);
    drawHistory();
  });

  /* ---- start ---------------------------------------------------------------------------- */
  const saved = getItem("local", SQL_ITEM);
  if (saved !== null) sqlBox.value = saved;
  highlight();
  keyShown();
  drawHistory();
  if (key) loadLayers();
})();
