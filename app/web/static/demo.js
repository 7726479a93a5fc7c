// fit-check's demo page: one EventSource per analysis, phases lit as they stream, the
// report rendered from markdown as it arrives. The model's text is never parsed as HTML:
// every node is built with createElement and textContent, so a report cannot inject
// markup or script.
"use strict";

const config = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);

// The session's LLM cost as the complete event reports it (calls of an unpriced model are
// unknown, not free).
// The two verdict buttons: one POST per analysis, recorded in its trace.
function askFeedback(streamKey) {
  const box = $("feedback");
  const note = $("feedback-note");
  note.textContent = "";
  box.hidden = false;
  for (const [id, rating] of [["rate-up", "up"], ["rate-down", "down"]]) {
    const button = $(id);
    button.disabled = false;
    button.onclick = async () => {
      $("rate-up").disabled = $("rate-down").disabled = true;
      const response = await fetch("/api/fit-check/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ stream_key: streamKey, rating }),
      });
      note.textContent = response.ok ? "Thanks: recorded in the trace." : "Not recorded.";
    };
  }
}

function costText(costUsd, unpricedCalls) {
  const known = `LLM cost $${Number(costUsd || 0).toFixed(4)}`;
  return unpricedCalls ? `${known} + ${unpricedCalls} unpriced call(s).` : `${known}.`;
}

function el(tag, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Inline markdown: **bold**, *italic* or _italic_, `code`. Everything else is plain text.
function inline(parent, text) {
  const pattern = /(\*\*[^*]+\*\*|`[^`]+`|\*[^*\s][^*]*\*|_[^_\s][^_]*_)/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) parent.append(text.slice(last, match.index));
    const token = match[0];
    if (token.startsWith("**")) parent.append(el("strong", token.slice(2, -2)));
    else if (token.startsWith("`")) parent.append(el("code", token.slice(1, -1)));
    else parent.append(el("em", token.slice(1, -1)));
    last = match.index + token.length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

// Block markdown, line by line: headings, bullet and numbered lists, fenced code,
// paragraphs. A report arrives in chunks: `push` renders each line a chunk completes and
// shows the unfinished line as plain text until its newline comes, so a chunk costs the
// DOM work of its own text, never a re-render of the report so far.
class MarkdownStream {
  constructor(target) {
    this.target = target;
    this.list = this.paragraph = this.code = null;
    this.unfinished = "";
    this.tail = el("span");
  }

  push(text) {
    this.tail.remove();
    const lines = (this.unfinished + text).split("\n");
    this.unfinished = lines.pop();
    for (const line of lines) this.line(line);
    if (this.unfinished) {
      this.tail.textContent = this.unfinished;
      (this.code ?? this.target).append(this.tail);
    }
  }

  end() {
    this.tail.remove();
    if (this.unfinished) this.line(this.unfinished);
    this.unfinished = "";
  }

  line(line) {
    if (this.code !== null) {
      if (line.startsWith("```")) this.code = null;
      else this.code.append(line + "\n");
      return;
    }
    if (line.startsWith("```")) {
      const pre = el("pre");
      this.code = el("code");
      pre.append(this.code);
      this.target.append(pre);
      this.list = this.paragraph = null;
      return;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
    const numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
    if (heading) {
      const node = el(`h${Math.min(heading[1].length + 1, 6)}`);
      inline(node, heading[2]);
      this.target.append(node);
      this.list = this.paragraph = null;
    } else if (bullet || numbered) {
      const tag = bullet ? "ul" : "ol";
      if (!this.list || this.list.tagName.toLowerCase() !== tag) {
        this.list = el(tag);
        this.target.append(this.list);
      }
      const item = el("li");
      inline(item, (bullet || numbered)[1]);
      this.list.append(item);
      this.paragraph = null;
    } else if (line.trim() === "") {
      this.list = this.paragraph = null;
    } else {
      if (!this.paragraph) { this.paragraph = el("p"); this.target.append(this.paragraph); }
      else this.paragraph.append(" ");
      inline(this.paragraph, line.trim());
      this.list = null;
    }
  }
}

// Chunks wait for the next frame and are rendered together: however fast they come, the
// page renders at most once a frame and stays free between frames.
class ReportView {
  constructor(target) {
    this.markdown = new MarkdownStream(target);
    this.queued = "";
    this.frame = 0;
  }

  add(chunk) {
    this.queued += chunk;
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.markdown.push(this.queued);
    this.queued = "";
  }

  end() {
    this.flush();
    this.markdown.end();
  }
}

// A lost connection is retried by the EventSource itself, after the service's `retry:`
// hint (2 s by default). After this many failed reconnects in a row (at that hint, about
// the service's 10 s resume window, past which it has no session left to resume) the
// page stops and says why.
const MAX_FAILED_RECONNECTS = 5;
const PROBE_TIMEOUT_MS = 5000;
// An EventSource cannot read why it was refused; fetch can. An id of the form the service
// sends, for a stream that is over: a request carrying it never starts an analysis, and
// is answered 204 for a query the service accepts, or with the error it gives the query.
const ENDED_STREAM_ID = "AAAAAAAAAAAAAAAA.0.end";

function fetchBriefly(url, headers = {}) {
  return fetch(url, { headers, cache: "no-store", signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
}

// Why a stream ended with no terminal event, in words a user can act on.
async function explain(streamUrl, started) {
  if (started) {
    // The service had this stream. Reconnects failed (nothing answers) or were told to
    // stop (204: the session is gone here); is the service itself up?
    const up = await fetchBriefly("/health").then((response) => response.ok, () => false);
    return up
      ? "The service is up, but this analysis's stream is over (the service restarted " +
        "or the stream expired): run the analysis again."
      : "Lost the connection to the service; it may have restarted. Run the analysis again.";
  }
  let response;
  try {
    response = await fetchBriefly(streamUrl, { "Last-Event-ID": ENDED_STREAM_ID });
  } catch {
    return "The service cannot be reached: is it running?";
  }
  if (response.status === 204) {
    return "The service turned the analysis away, though it accepts this query (it was " +
      "busy or restarting): run the analysis again in a few seconds.";
  }
  const body = await response.json().catch(() => null);
  return body && typeof body.message === "string"
    ? `${body.code}: ${body.message}`
    : `The service refused the request (HTTP ${response.status}).`;
}

function phaseItem(phase) {
  return document.querySelector(`#phases li[data-phase="${phase}"]`);
}

let shown = null;  // the analysis on the page: { stop() }

function start(query, includeThoughts) {
  if (shown) shown.stop();
  $("run").hidden = false;
  $("feedback").hidden = true;
  $("go").disabled = true;
  $("status").textContent = "Streaming...";
  $("status").className = "";
  $("report").replaceChildren();
  $("thought-list").replaceChildren();
  $("session-id").textContent = "-";
  const traceLink = $("trace-link");
  traceLink.textContent = "-";
  traceLink.removeAttribute("href");
  const logsLink = $("logs-link");
  logsLink.textContent = "-";
  logsLink.removeAttribute("href");
  for (const item of document.querySelectorAll("#phases li")) {
    item.className = "";
    item.querySelector(".note").textContent = "";
  }
  const params = new URLSearchParams({ query, include_thoughts: String(includeThoughts) });
  const url = `/api/fit-check/stream?${params}`;
  const source = new EventSource(url);
  const report = new ReportView($("report"));
  let events = 0;
  let failures = 0;  // error events since the last open or event: the drop, then reconnects
  let over = false;
  const run = {
    stop() {
      if (over) return;
      over = true;
      source.close();
      report.end();
      if (shown === run) $("go").disabled = false;
    },
  };
  shown = run;
  const say = (text, isError = false) => {
    if (shown !== run) return;
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  };
  const fail = (text) => {
    say(text, true);
    const running = shown === run && document.querySelector("#phases li.running");
    if (running) running.className = "failed";
  };
  let streamKey = "";  // the unguessable part of the event ids: what rates this analysis
  const on = (type, handle) => source.addEventListener(type, (event) => {
    // Ours carry data; a lost connection is an `error` event without any (below).
    if (!(event instanceof MessageEvent)) return;
    events++;
    failures = 0;
    streamKey = event.lastEventId.split(".")[0] || streamKey;
    handle(JSON.parse(event.data));
  });

  on("session", ({ session_id, trace_id }) => {
    $("session-id").textContent = session_id;
    // The session's lines in VictoriaLogs' own UI (vmui), by a LogsQL query.
    const logsQuery = `session_id:=${JSON.stringify(session_id)}`;
    logsLink.textContent = "this session's log lines";
    logsLink.href = `${config.logs_ui_url.replace(/\/$/, "")}/select/vmui/#/?query=${encodeURIComponent(logsQuery)}&g0.relative_time=last_24_hours`;
    if (trace_id) {
      traceLink.textContent = trace_id;
      traceLink.href = `${config.trace_ui_url.replace(/\/$/, "")}/trace/${trace_id}`;
    }
  });
  on("phase", ({ phase, message }) => {
    const item = phaseItem(phase);
    item.className = "running";
    item.querySelector(".note").textContent = message;
  });
  on("phase_complete", ({ phase, summary, duration_ms }) => {
    const item = phaseItem(phase);
    item.className = "done";
    item.querySelector(".note").textContent = `${summary} (${duration_ms} ms)`;
  });
  on("thought", ({ type, content }) => {
    $("thought-list").append(el("li", `${type}: ${content}`));
  });
  on("response", ({ chunk }) => report.add(chunk));
  on("complete", ({ duration_ms, cost_usd, unpriced_calls }) => {
    run.stop();
    say(`Done in ${duration_ms} ms. ${costText(cost_usd, unpriced_calls)}`);
    if (shown === run) askFeedback(streamKey);
  });
  on("error", ({ code, message }) => {
    run.stop();
    fail(`${code}: ${message}`);
  });
  source.addEventListener("open", () => {
    if (failures > 0) say("Streaming...");
    failures = 0;
  });
  source.addEventListener("error", (event) => {
    if (event instanceof MessageEvent || over) return;
    // CONNECTING: the browser reconnects on its own, resuming where the stream was.
    // CLOSED: the service answered something other than a stream (an error, or 204).
    if (source.readyState === EventSource.CONNECTING && ++failures <= MAX_FAILED_RECONNECTS) {
      say("Lost the connection; reconnecting...");
      return;
    }
    run.stop();
    say("Lost the connection; asking the service why...");
    explain(url, events > 0).then(fail);
  });
}

$("grafana-link").href = `${config.grafana_url.replace(/\/$/, "")}/d/fit-check`;
$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  history.replaceState(null, "", `/?${new URLSearchParams({ query })}`);
  start(query, $("thoughts").checked);
});
const linked = new URLSearchParams(location.search).get("query");
if (linked) {
  $("query").value = linked;
  start(linked, $("thoughts").checked);
}
