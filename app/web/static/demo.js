// fit-check's demo page: one EventSource per analysis, phases lit as they stream, the
// report rendered from markdown. The model's text is never parsed as HTML: every node is
// built with createElement and textContent, so a report cannot inject markup or script.
"use strict";

const config = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
let source = null;

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

// Block markdown: headings, bullet and numbered lists, fenced code, paragraphs.
function renderMarkdown(target, markdown) {
  target.replaceChildren();
  let list = null;
  let paragraph = null;
  let code = null;
  for (const line of markdown.split("\n")) {
    if (code !== null) {
      if (line.startsWith("```")) { target.append(code.parentNode); code = null; }
      else code.textContent += line + "\n";
      continue;
    }
    if (line.startsWith("```")) {
      const pre = el("pre"); code = el("code"); pre.append(code);
      list = paragraph = null;
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
    const numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
    if (heading) {
      const node = el(`h${Math.min(heading[1].length + 1, 6)}`);
      inline(node, heading[2]);
      target.append(node);
      list = paragraph = null;
    } else if (bullet || numbered) {
      const tag = bullet ? "ul" : "ol";
      if (!list || list.tagName.toLowerCase() !== tag) { list = el(tag); target.append(list); }
      const item = el("li");
      inline(item, (bullet || numbered)[1]);
      list.append(item);
      paragraph = null;
    } else if (line.trim() === "") {
      list = paragraph = null;
    } else {
      if (!paragraph) { paragraph = el("p"); target.append(paragraph); }
      else paragraph.append(" ");
      inline(paragraph, line.trim());
      list = null;
    }
  }
  if (code !== null) target.append(code.parentNode);
}

function phaseItem(phase) {
  return document.querySelector(`#phases li[data-phase="${phase}"]`);
}

function start(query, includeThoughts) {
  if (source) source.close();
  $("run").hidden = false;
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
  source = new EventSource(`/api/fit-check/stream?${params}`);
  let report = "";
  const data = (event) => JSON.parse(event.data);
  const finish = () => { source.close(); source = null; $("go").disabled = false; };

  source.addEventListener("session", (event) => {
    const { session_id, trace_id } = data(event);
    $("session-id").textContent = session_id;
    // The session's lines in VictoriaLogs' own UI (vmui), by a LogsQL query.
    const logsQuery = `session_id:=${JSON.stringify(session_id)}`;
    logsLink.textContent = "this session's log lines";
    logsLink.href = `${config.logs_ui_url.replace(/\/$/, "")}/select/vmui/#/?query=${encodeURIComponent(logsQuery)}&g0.relative_time=last_24_hours`;
    if (trace_id) {
      traceLink.textContent = trace_id;
      traceLink.href = `${config.jaeger_ui_url.replace(/\/$/, "")}/trace/${trace_id}`;
    }
  });
  source.addEventListener("phase", (event) => {
    const { phase, message } = data(event);
    const item = phaseItem(phase);
    item.className = "running";
    item.querySelector(".note").textContent = message;
  });
  source.addEventListener("phase_complete", (event) => {
    const { phase, summary, duration_ms } = data(event);
    const item = phaseItem(phase);
    item.className = "done";
    item.querySelector(".note").textContent = `${summary} (${duration_ms} ms)`;
  });
  source.addEventListener("thought", (event) => {
    const { type, content } = data(event);
    $("thought-list").append(el("li", `${type}: ${content}`));
  });
  source.addEventListener("response", (event) => {
    report += data(event).chunk;
    renderMarkdown($("report"), report);
  });
  source.addEventListener("complete", (event) => {
    $("status").textContent = `Done in ${data(event).duration_ms} ms.`;
    finish();
  });
  source.addEventListener("error", (event) => {
    // Ours carry data. A lost connection is an error event without data: the browser
    // reconnects on its own (resuming where it was), unless the service refused it.
    if (!(event instanceof MessageEvent)) {
      if (source && source.readyState === EventSource.CLOSED) {
        $("status").textContent = "The service refused the request or cannot be reached.";
        $("status").className = "error";
        finish();
      }
      return;
    }
    const { code, message } = data(event);
    $("status").textContent = `${code}: ${message}`;
    $("status").className = "error";
    const running = document.querySelector("#phases li.running");
    if (running) running.className = "failed";
    finish();
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
