// The switchyard dashboard: reads and drives the admin API of the server that served it.
//
// Every value that comes from the API (event attributes above all: anyone who can publish
// chooses them) is put into the page as text (textContent, text nodes, attribute values),
// never parsed as HTML. The admin token lives in sessionStorage and travels in the
// Authorization header only.
"use strict";

(function () {
  const POLL_MS = 2000;
  const TOKEN_KEY = "switchyard.admin-token";
  const VIEWS = ["sinks", "routes", "dead-letters", "history", "explain"];

  const $ = (selector) => document.querySelector(selector);

  let view = "sinks";
  let askingToken = false;
  let previous = null; // { at, sinks: { name: {delivered, failed} } } of the last sinks poll
  let dlFilter = "";
  let shownDeadLetters = null; // the listing last drawn, as JSON
  let historyQuery = "";
  let historyCursor = null;

  // === The admin API ===

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = body;
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      askForToken(token ? "The token was refused; enter it again." : null);
      throw new ApiError(401, "the admin token is needed");
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const reason = data && typeof data.error === "string" ? data.error : text;
      throw new ApiError(response.status, method + " " + path + ": " + response.status + " " + reason);
    }
    return data;
  }

  function query(form) {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) {
      if (String(value).trim() !== "") params.append(key, String(value).trim());
    }
    const text = params.toString();
    return text ? "?" + text : "";
  }

  // === Page helpers ===

  // An element with text children; never HTML.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Replaces a table's rows; the button that had the focus (found again by its label) keeps
  // it, so that refreshing does not throw a keyboard user back to the top of the page.
  function fill(tbody, rows, columns, empty) {
    const focused = tbody.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
    if (rows.length === 0) {
      tbody.replaceChildren(el("tr", {}, el("td", { colspan: String(columns), class: "empty" }, empty)));
    } else {
      tbody.replaceChildren(...rows);
    }
    if (focused) {
      const again = [...tbody.querySelectorAll("button")].find((b) => b.getAttribute("aria-label") === focused);
      if (again) again.focus();
    }
  }

  function say(text, isError) {
    const status = $("#status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function failed(error) {
    if (error instanceof ApiError && error.status === 401) return;
    if (error instanceof TypeError) {
      // fetch() itself failed: no answer at all.
      say("Cannot reach the admin server (" + error.message + "); retrying.", true);
      return;
    }
    say(error instanceof Error ? error.message : String(error), true);
  }

  // UTC, the date left out for today.
  function time(iso) {
    if (!iso) return "—";
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return String(iso);
    const [date, clock] = at.toISOString().split("T");
    const today = new Date().toISOString().split("T")[0];
    const hms = clock.slice(0, 8) + "Z";
    return date === today ? hms : date + " " + hms;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "—";
    if (value < 1) return "0 s";
    if (value < 120) return value.toFixed(0) + " s";
    if (value < 7200) return (value / 60).toFixed(0) + " min";
    return (value / 3600).toFixed(1) + " h";
  }

  function rate(value) {
    return value === null ? "—" : value.toFixed(value < 10 ? 1 : 0);
  }

  function badge(text, kind) {
    return el("span", { class: "badge " + kind }, text);
  }

  function show(section, title, value) {
    section.hidden = false;
    section.querySelector("h3").textContent = title;
    section.querySelector("pre").textContent = JSON.stringify(value, null, 2);
    section.scrollIntoView({ block: "nearest" });
  }

  // === Sinks ===

  function sinkState(sink) {
    if (sink.orphaned) return badge("orphaned", "warn");
    if (sink.paused) return badge("paused", "warn");
    const breaker = sink.breaker && sink.breaker.state;
    if (breaker === "open") return badge("breaker open", "bad");
    if (breaker === "half_open") return badge("breaker half-open", "warn");
    if (sink.in_flight > 0 || sink.backlog > 0) return badge("delivering", "ok");
    return badge("idle", "ok");
  }

  function sinkRow(sink, rates) {
    const name = String(sink.name);
    const header = el("th", { scope: "row" }, name, el("br"), el("small", {}, sink.orphaned ? "orphaned" : sink.kind));
    if (sink.orphaned) {
      return el("tr", { "data-sink": name },
        header, el("td", { class: "state" }, sinkState(sink)), el("td", { class: "breaker" }, "—"),
        el("td", {}, "—"), el("td", { class: "num backlog" }, sink.backlog),
        el("td", { colspan: "5" }, "No longer configured: its deliveries wait for it to return or to be purged."),
        el("td", {}, ""));
    }
    const breaker = sink.breaker
      ? [String(sink.breaker.state).replace("_", "-"),
         sink.breaker.opened_at ? el("small", {}, " since " + time(sink.breaker.opened_at)) : null]
      : ["none"];
    const limit = sink.adaptive ? sink.concurrency_limit + " (adaptive)" : sink.concurrency_limit;
    const lastError = sink.last_error
      ? [String(sink.last_error.message), el("br"), el("small", {}, time(sink.last_error.at))]
      : ["—"];
    const action = sink.paused ? "Resume" : "Pause";
    const button = el("button", {
      type: "button",
      "aria-label": action + " " + name,
      onclick: () => setPaused(name, !sink.paused),
    }, action);
    return el("tr", { "data-sink": name },
      header,
      el("td", { class: "state" }, sinkState(sink)),
      el("td", { class: "breaker" }, ...breaker),
      el("td", { class: "num" }, sink.in_flight + " of " + limit),
      el("td", { class: "num backlog" }, sink.backlog),
      el("td", { class: "num" }, seconds(sink.oldest_age_seconds)),
      el("td", { class: "num" }, rate(rates.delivered)),
      el("td", { class: "num" }, rate(rates.failed)),
      el("td", { class: "num totals" }, sink.delivered + ", " + sink.retried + ", " + sink.dead_lettered),
      el("td", { class: "last-error" }, ...lastError),
      el("td", {}, button));
  }

  async function refreshSinks() {
    const data = await api("GET", "/api/v1/sinks");
    const now = performance.now();
    const counts = {};
    const rows = data.sinks.map((sink) => {
      const name = String(sink.name);
      const current = { delivered: sink.delivered || 0, failed: (sink.retried || 0) + (sink.dead_lettered || 0) };
      counts[name] = current;
      const before = previous && previous.sinks[name];
      const elapsed = previous ? (now - previous.at) / 1000 : 0;
      const rates = before && elapsed > 0
        ? { delivered: Math.max(0, current.delivered - before.delivered) / elapsed,
            failed: Math.max(0, current.failed - before.failed) / elapsed }
        : { delivered: null, failed: null };
      return sinkRow(sink, rates);
    });
    previous = { at: now, sinks: counts };
    fill($("#sinks-table tbody"), rows, 11, "No sinks are configured.");
  }

  async function setPaused(name, paused) {
    const action = paused ? "pause" : "resume";
    try {
      await api("POST", "/api/v1/sinks/" + encodeURIComponent(name) + "/" + action, "{}");
      say("Sink " + name + (paused ? " paused." : " resumed."));
      await refreshSinks();
    } catch (error) {
      failed(error);
    }
  }

  // === Routes ===

  function matchText(match) {
    const parts = [];
    if (match.types && match.types.length) parts.push("types: " + match.types.join(", "));
    if (match.sources && match.sources.length) parts.push("sources: " + match.sources.join(", "));
    const subject = match.subject;
    if (subject) {
      const rules = [];
      if (subject.begins_with) rules.push("begins with " + subject.begins_with);
      if (subject.ends_with) rules.push("ends with " + subject.ends_with);
      rules.push(subject.case_sensitive ? "case-sensitive" : "ignoring case");
      parts.push("subject " + rules.join(", "));
    }
    for (const filter of match.advanced || []) parts.push(filter.key + " " + filter.op);
    return parts.length ? parts : ["every event"];
  }

  async function refreshRoutes() {
    const data = await api("GET", "/api/v1/routes");
    const rows = data.routes.map((route) => el("tr", {},
      el("th", { scope: "row" }, route.name),
      el("td", {}, ...matchText(route.match || {}).flatMap((part, i) => (i ? [el("br"), part] : [part]))),
      el("td", {}, route.sql ? el("code", {}, route.sql) : "—"),
      el("td", {}, (route.to || []).join(", ")),
      el("td", {}, route.priority),
      el("td", {}, route.ordering || "any")));
    fill($("#routes-table tbody"), rows, 6, "No routes are configured.");
  }

  // === Dead letters ===

  function deadLetterRow(record) {
    const id = String(record.id);
    const event = record.event || {};
    const act = (label, handler) =>
      el("button", { type: "button", "aria-label": label + " dead letter " + id, onclick: handler }, label);
    const attempts = record.attempts + (record.attempts === 1 ? " attempt" : " attempts");
    const status = record.last_status === null || record.last_status === undefined ? "" : ", last status " + record.last_status;
    return el("tr", { "data-id": id },
      el("td", { class: "num" }, id),
      el("td", { class: "event-id" }, event.id),
      el("td", { class: "event-type" }, event.type),
      el("td", {}, event.source),
      el("td", {}, String(record.route) + " → " + String(record.sink)),
      el("td", {}, record.reason, el("br"), el("small", {}, attempts + status)),
      el("td", {}, time(record.dead_lettered_time)),
      el("td", { class: "actions" },
        act("Show", () => showDeadLetter(id)),
        act("Replay", () => replayDeadLetter(id)),
        act("Delete", () => deleteDeadLetter(id))));
  }

  async function refreshDeadLetters(force) {
    const data = await api("GET", "/api/v1/dead-letters" + (dlFilter ? dlFilter + "&" : "?") + "limit=200");
    // Unchanged records are not drawn again (nothing moves under the pointer).
    const seen = JSON.stringify(data);
    if (!force && seen === shownDeadLetters) return;
    shownDeadLetters = seen;
    fill($("#dl-table tbody"), data.dead_letters.map(deadLetterRow), 8, "No dead letters.");
    $("#dl-more").hidden = data.next === null;
  }

  async function showDeadLetter(id) {
    try {
      show($("#dl-detail"), "Dead letter " + id, await api("GET", "/api/v1/dead-letters/" + encodeURIComponent(id)));
    } catch (error) {
      failed(error);
    }
  }

  async function replayDeadLetter(id) {
    try {
      await api("POST", "/api/v1/dead-letters/" + encodeURIComponent(id) + "/replay", "{}");
      say("Dead letter " + id + " put back in its sink's queue.");
      $("#dl-detail").hidden = true;
      await refreshDeadLetters();
    } catch (error) {
      failed(error);
    }
  }

  async function deleteDeadLetter(id) {
    if (!window.confirm("Delete dead letter " + id + "? Its event is lost.")) return;
    try {
      await api("DELETE", "/api/v1/dead-letters/" + encodeURIComponent(id));
      say("Dead letter " + id + " deleted.");
      $("#dl-detail").hidden = true;
      await refreshDeadLetters();
    } catch (error) {
      failed(error);
    }
  }

  async function replayAllMatching() {
    const what = dlFilter ? "every dead letter matching the filter" : "every dead letter";
    if (!window.confirm("Replay " + what + "?")) return;
    try {
      const data = await api("POST", "/api/v1/dead-letters/replay" + dlFilter, "{}");
      say(data.replayed + " dead letters put back in their sinks' queues.");
      await refreshDeadLetters();
    } catch (error) {
      failed(error);
    }
  }

  // === Delivery history ===

  function deliveryItem(delivery) {
    const outcome = String(delivery.outcome || "none");
    const kind = outcome === "delivered" ? "ok" : outcome === "retrying" ? "warn" : "bad";
    const status = delivery.status === null || delivery.status === undefined ? "" : " (" + delivery.status + ")";
    return el("li", {},
      String(delivery.route) + " → " + String(delivery.sink) + ": ",
      badge(outcome, kind),
      status + ", " + delivery.attempts + (delivery.attempts === 1 ? " attempt" : " attempts"));
  }

  function historyRow(event) {
    const key = String(event.key);
    return el("tr", { "data-key": key },
      el("td", {}, time(event.last_time)),
      el("td", { class: "event-id" }, event.id),
      el("td", { class: "event-type" }, event.type),
      el("td", {}, event.source),
      el("td", {}, el("ul", { class: "plain" }, ...(event.deliveries || []).map(deliveryItem))),
      el("td", {}, el("button", {
        type: "button",
        "aria-label": "Show event " + String(event.id),
        onclick: () => showEvent(key),
      }, "Show")));
  }

  async function refreshHistory(more) {
    let path = "/api/v1/events" + historyQuery;
    if (more && historyCursor !== null) {
      path += (historyQuery ? "&" : "?") + "cursor=" + encodeURIComponent(historyCursor);
    }
    const data = await api("GET", path);
    const tbody = $("#history-table tbody");
    const rows = data.events.map(historyRow);
    if (more) tbody.append(...rows);
    else fill(tbody, rows, 6, "No events match.");
    historyCursor = data.next;
    $("#history-next").hidden = data.next === null;
  }

  async function showEvent(key) {
    try {
      const event = await api("GET", "/api/v1/events/" + encodeURIComponent(key));
      show($("#history-detail"), "Event " + String(event.id) + " (key " + key + ")", event);
    } catch (error) {
      failed(error);
    }
  }

  // === Explain ===

  function explainTable(event) {
    const rows = (event.routes || []).map((verdict) => {
      const sql = verdict.sql
        ? "SQL " + JSON.stringify(verdict.sql.value) + (verdict.sql.error ? " (" + verdict.sql.error + ")" : "")
        : null;
      return el("tr", {},
        el("th", { scope: "row" }, verdict.route),
        el("td", {}, verdict.matched ? badge("matches", "ok") : badge("no match", "bad")),
        el("td", {}, verdict.matched ? "" : verdict.reason, sql ? el("br") : null, sql),
        el("td", {}, (verdict.sinks || []).join(", ") || "—"));
    });
    const body = el("tbody");
    fill(body, rows, 4, "No routes are configured.");
    return el("table", { class: "explain" },
      el("caption", {}, "Event " + String(event.id) + " (type " + String(event.type) + ", source " + String(event.source) + ")"),
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "Route"), el("th", { scope: "col" }, "Verdict"),
        el("th", { scope: "col" }, "Why not"), el("th", { scope: "col" }, "Sinks"))),
      body);
  }

  // What each matched sink would receive (after the transforms), or the transform's error.
  function received(event) {
    return (event.sinks || []).map((target) => el("div", { class: "received" },
      el("h3", {}, String(target.route) + " → " + String(target.sink) + (target.error ? ": transform failed" : " receives")),
      target.error
        ? el("p", { class: "error" }, target.error)
        : el("pre", {}, JSON.stringify(target.event, null, 2))));
  }

  async function explain(event) {
    event.preventDefault();
    const result = $("#explain-result");
    const path = "/api/v1/explain" + ($("#explain-transform").checked ? "?transform=true" : "");
    try {
      const data = await api("POST", path, $("#explain-input").value);
      result.replaceChildren(...data.events.flatMap((e) => [explainTable(e), ...received(e)]));
      say("Explained " + data.events.length + (data.events.length === 1 ? " event." : " events."));
    } catch (error) {
      result.replaceChildren(el("p", { class: "error" }, error.message));
      failed(error);
    }
  }

  // === Token ===

  function askForToken(message) {
    if (message) sessionStorage.removeItem(TOKEN_KEY);
    showForget();
    if (askingToken && !message) return;
    askingToken = true;
    $("#token-view").hidden = false;
    if (message) $("#token-message").textContent = message;
    say("The admin API needs its token.", true);
    $("#token-input").focus();
  }

  function showForget() {
    $("#forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    showForget();
    askForToken("The token is forgotten in this tab; enter it to go on.");
  }

  function useToken(event) {
    event.preventDefault();
    const input = $("#token-input");
    const token = input.value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = "";
    askingToken = false;
    $("#token-view").hidden = true;
    showForget();
    refresh();
  }

  // === Views and polling ===

  function showView(name) {
    view = VIEWS.includes(name) ? name : "sinks";
    for (const id of VIEWS) $("#view-" + id).hidden = id !== view;
    for (const link of document.querySelectorAll("nav a")) {
      if (link.dataset.view === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    refresh();
    if (view === "history" && !askingToken) refreshHistory(false).catch(failed);
  }

  let refreshing = false;

  async function refresh() {
    if (askingToken || refreshing || document.hidden) return;
    refreshing = true;
    try {
      // Sinks every time, so that their rates stay current whatever the view.
      await refreshSinks();
      if (view === "routes") await refreshRoutes();
      if (view === "dead-letters") await refreshDeadLetters();
      if (view === "history" && $("#history-live").checked) await refreshHistory(false);
      // Not in the live region: a screen reader would read it out every 2 seconds.
      $("#updated").textContent = "Updated " + time(new Date().toISOString()) + ".";
      const status = $("#status");
      if (status.classList.contains("error")) say("");
    } catch (error) {
      failed(error);
    } finally {
      refreshing = false;
    }
  }

  function start() {
    $("#token-form").addEventListener("submit", useToken);
    $("#forget-token").addEventListener("click", forgetToken);
    showForget();
    $("#dl-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      dlFilter = query(event.target);
      refreshDeadLetters(true).catch(failed);
    });
    $("#dl-replay-all").addEventListener("click", replayAllMatching);
    $("#history-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      historyQuery = query(event.target);
      refreshHistory(false).then(() => say("History searched.")).catch(failed);
    });
    $("#history-next").addEventListener("click", () => refreshHistory(true).catch(failed));
    $("#explain-form").addEventListener("submit", explain);
    window.addEventListener("hashchange", () => showView(location.hash.slice(1)));
    historyQuery = query($("#history-filter"));
    showView(location.hash.slice(1));
    setInterval(refresh, POLL_MS);
    document.addEventListener("visibilitychange", refresh);
  }

  start();
})();
