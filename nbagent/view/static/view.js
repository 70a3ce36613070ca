// nbagent view: the episodes table, one episode as a notebook, a run's curves. Plain DOM, no framework.
// Every recorded string goes in through text nodes (el() below), never as HTML: model output is untrusted.
"use strict";

const PAGE_SIZE = 100;
const embedded = document.getElementById("nbview-data");
const DATA = embedded ? JSON.parse(embedded.textContent) : null;

async function getJSON(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

const source = DATA
  ? { summary: async () => DATA.summary, rows: async () => DATA.rows, episode: async (i) => DATA.episodes[i] ?? null }
  : { summary: () => getJSON("api/summary"), rows: () => getJSON("api/rows"), episode: (i) => getJSON(`api/episode/${i}`) };

function el(tag, attrs, ...children) {
  const node = tag === "svg" || attrs?.svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "svg" || value === undefined || value === null) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "style") node.style.cssText = value; // CSSOM: allowed under the server's CSP
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : typeof x === "number" ? String(+x.toFixed(digits)) : String(x));
const text = (value) => (typeof value === "string" ? value : JSON.stringify(value, null, 1));

function readHash() {
  return Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
}
function setHash(state) {
  const clean = Object.fromEntries(Object.entries(state).filter(([, v]) => v !== "" && v !== undefined && v !== null));
  location.hash = new URLSearchParams(clean).toString();
}

let summary = null;
let rows = [];

// ---------------------------------------------------------------------------------------------- table

const COLUMNS = [
  ["index", "#"], ["task", "task"], ["environment", "env / split"], ["group", "group / sample"],
  ["reward", "reward"], ["termination", "termination"], ["steps", "steps"], ["tokens", "tokens"],
  ["wall_s", "wall s"], ["policy_version", "policy"], ["iteration", "iter"],
];

function selected(state) {
  const q = (state.q || "").toLowerCase();
  const min = state.min === undefined ? -Infinity : Number(state.min);
  const max = state.max === undefined ? Infinity : Number(state.max);
  let found = rows.filter((r) =>
    (!state.term || r.termination === state.term) &&
    (state.iter === undefined || String(r.iteration) === state.iter) &&
    (state.min === undefined && state.max === undefined || (r.reward !== null && r.reward >= min && r.reward <= max)) &&
    (!q || `${r.task} ${r.prompt}`.toLowerCase().includes(q)));
  const key = state.group ? null : state.sort || "index";
  const sign = state.desc ? -1 : 1;
  const missing = (x) => x === null || x === undefined;
  const order = (a, b) => (a === b ? 0 : a < b ? -1 : 1);
  const last = (a, b) => missing(a) - missing(b); // episodes without the value go last, either way
  found = found.slice().sort(key
    ? (a, b) => last(a[key], b[key]) || (missing(a[key]) ? 0 : sign * order(a[key], b[key])) || a.index - b.index
    : (a, b) => order(a.task, b.task) || order(String(a.group), String(b.group)) || a.sample - b.sample || a.index - b.index);
  return found;
}

function filterBar(state) {
  const terminations = [...new Set(rows.map((r) => r.termination))].sort();
  const update = (key) => (event) => setHash({ ...state, [key]: event.target.type === "checkbox" ? (event.target.checked ? "1" : "") : event.target.value, page: "" });
  return el("div", { class: "filters" },
    el("input", { id: "q", type: "search", placeholder: "search task", value: state.q || "", onchange: update("q") }),
    el("select", { id: "term", onchange: update("term") },
      el("option", { value: "" }, "any termination"),
      terminations.map((t) => el("option", { value: t, selected: t === state.term ? "" : null }, t))),
    "reward", el("input", { id: "min", type: "number", step: "any", value: state.min, onchange: update("min") }),
    "to", el("input", { id: "max", type: "number", step: "any", value: state.max, onchange: update("max") }),
    el("label", {}, el("input", { id: "group", type: "checkbox", checked: state.group ? "" : null, onchange: update("group") }), " group by task"),
    state.iter === undefined ? null : el("span", {}, `iteration ${state.iter} `, el("a", { href: "#", onclick: (e) => { e.preventDefault(); setHash({ ...state, iter: "" }); } }, "(all)")));
}

function rowCells(r) {
  const breakdown = Object.entries(r.breakdown || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
  return [
    el("td", {}, r.index),
    el("td", {}, el("div", {}, r.task), el("div", { class: "prompt" }, r.prompt)),
    el("td", {}, r.environment || "–", el("div", { class: "muted" }, r.split || "")),
    el("td", {}, r.group || "–", el("div", { class: "muted" }, `sample ${r.sample}`)),
    el("td", { title: breakdown }, fmt(r.reward), el("div", { class: "muted" }, breakdown)),
    el("td", {}, r.termination), el("td", {}, r.steps), el("td", {}, r.tokens), el("td", {}, fmt(r.wall_s, 1)),
    el("td", {}, fmt(r.policy_version)), el("td", {}, fmt(r.iteration)),
  ];
}

function renderTable(state) {
  const found = selected(state);
  const pages = Math.max(1, Math.ceil(found.length / PAGE_SIZE));
  const page = Math.min(Number(state.page || 0), pages - 1);
  const shown = found.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
  const head = el("tr", {}, COLUMNS.map(([key, label]) =>
    el("th", { onclick: () => setHash({ ...state, sort: key, desc: state.sort === key && !state.desc ? "1" : "", page: "" }) },
      label, state.sort === key ? (state.desc ? " ▼" : " ▲") : "")));
  const body = [];
  let lastGroup = null;
  for (const r of shown) {
    const group = `${r.task}\u0000${r.group}`;
    if (state.group && group !== lastGroup) {
      const members = found.filter((o) => o.task === r.task && o.group === r.group);
      const rewards = members.map((o) => o.reward).filter((x) => x !== null);
      const mean = rewards.length ? rewards.reduce((a, b) => a + b, 0) / rewards.length : null;
      body.push(el("tr", { class: "group" }, el("td", { colspan: COLUMNS.length },
        `${r.task} · group ${r.group || "–"} · ${members.length} samples · rewards ${rewards.map((x) => fmt(x)).join(" ")} · mean ${fmt(mean)}`)));
      lastGroup = group;
    }
    body.push(el("tr", { class: "row", "data-index": r.index, onclick: () => setHash({ episode: r.index }) }, rowCells(r)));
  }
  const pager = el("div", { class: "pager" },
    el("button", { disabled: page === 0 ? "" : null, onclick: () => setHash({ ...state, page: page - 1 }) }, "‹ prev"),
    el("span", { id: "count" }, `${found.length} of ${rows.length} episodes · page ${page + 1} of ${pages}`),
    el("button", { disabled: page >= pages - 1 ? "" : null, onclick: () => setHash({ ...state, page: page + 1 }) }, "next ›"));
  return [filterBar(state), pager, el("table", { id: "episodes" }, el("thead", {}, head), el("tbody", {}, body))];
}

// -------------------------------------------------------------------------------------------- episode

const BASE64 = /^[A-Za-z0-9+/=\s]+$/;
const ANSI = /\u001b\[[0-9;]*[A-Za-z]/g;

function output(out) {
  if (out.output_type === "stream") return el("pre", { class: out.name === "stderr" ? "stderr" : "stdout" }, out.text);
  if (out.output_type === "error") {
    return el("pre", { class: "error" }, `${out.ename}: ${out.evalue}\n`, (out.traceback || []).join("\n").replace(ANSI, ""));
  }
  const data = out.data || {};
  const png = data["image/png"];
  if (typeof png === "string" && BASE64.test(png)) return el("img", { class: "output", src: `data:image/png;base64,${png.replace(/\s/g, "")}`, alt: "image output" });
  const plain = data["text/plain"];
  return el("pre", {}, plain === undefined ? `(${Object.keys(data).join(", ")})` : Array.isArray(plain) ? plain.join("") : text(plain));
}

function toolCall(call) {
  const args = [...(call.args || []).map((a) => JSON.stringify(a)), ...Object.entries(call.kwargs || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`)];
  return el("div", { class: "tool" },
    el("div", {}, el("strong", {}, "tool "), `${call.name}(${args.join(", ")})`, el("span", { class: "muted" }, ` ${fmt(call.latency_s, 3)} s`)),
    call.error ? el("pre", { class: "error" }, call.error) : el("pre", {}, text(call.result)));
}

function tokenColour(logprob) {
  const p = Math.exp(logprob);
  return `hsl(${Math.round(120 * p)}, 75%, ${Math.round(72 + 12 * p)}%)`;
}

function tokens(call) {
  const ids = call.completion_token_ids;
  if (!ids || !ids.length) return el("div", { class: "muted notokens" }, "no token ids recorded");
  const logprobs = call.completion_logprobs || [];
  return el("div", { class: "tokens" },
    el("div", { class: "muted" }, `${ids.length} completion tokens (token ids; no tokenizer is loaded), coloured by behaviour probability: red low, green high`),
    ids.map((id, i) => {
      const lp = logprobs[i];
      return lp === undefined
        ? el("span", { class: "tok", title: `token ${id} · no logprob` }, id)
        : el("span", { class: "tok", "data-logprob": lp, style: `background: ${tokenColour(lp)}`, title: `token ${id} · logprob ${lp.toFixed(4)} · p ${Math.exp(lp).toFixed(3)}` }, id);
    }));
}

function modelCall(call) {
  return el("div", { class: "call" },
    el("details", {}, el("summary", {}, `prompt: ${call.messages.length} messages`, call.prompt_token_ids ? `, ${call.prompt_token_ids.length} tokens` : ""),
      call.messages.map((m) => el("div", {}, el("div", { class: "muted" }, m.role), el("pre", {}, text(m.content)))),
      call.prefill ? el("div", {}, el("div", { class: "muted" }, "prefill"), el("pre", {}, call.prefill)) : null),
    el("div", { class: "muted" }, `completion · finish ${call.finish_reason || "–"} · ${fmt(call.latency_s, 2)} s`, call.model ? ` · ${call.model}` : ""),
    el("pre", { class: "completion" }, call.completion),
    tokens(call));
}

function stepCell(step) {
  const cell = step.cell;
  return el("section", { class: "cell step", "data-step": step.index },
    el("h3", {}, `Step ${step.index}`, cell ? el("span", { class: "muted" }, ` · ${cell.status} · ${fmt(cell.duration_s, 2)} s`) : ""),
    (step.context_events || []).map((e) => el("div", { class: "event" },
      `context ${e.kind}: dropped steps ${e.dropped_steps.join(", ") || "none"} · tokens ${e.tokens_before} → ${e.tokens_after}`, e.detail ? ` · ${e.detail}` : "")),
    step.notepad ? el("details", {}, el("summary", {}, "notepad"), el("pre", {}, step.notepad)) : null,
    step.action.think ? el("div", { class: "think" }, step.action.think) : null,
    step.action.kind === "format_error" ? el("pre", { class: "error" }, `format error: ${step.action.error}`) : null,
    cell ? el("pre", { class: "code" }, cell.code) : null,
    cell ? (cell.tool_calls || []).map(toolCall) : null,
    cell ? cell.outputs.map(output) : null,
    cell?.note ? el("div", { class: "event" }, cell.note) : null,
    el("details", {}, el("summary", {}, "observation (what the model read next)"), el("pre", {}, step.observation)),
    el("details", { open: "" }, el("summary", {}, "model call"), modelCall(step.model_call)));
}

async function renderEpisode(index) {
  const record = await source.episode(index);
  if (!record) return [el("div", { class: "notice" }, `episode ${index} is not embedded in this file (see the note on the table).`)];
  const reward = record.reward;
  const breakdown = reward ? Object.entries(reward.breakdown).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") : "";
  const meta = [record.environment, record.split, record.group_id && `group ${record.group_id}`, `sample ${record.sample_index}`,
    `${record.model.provider}:${record.model.model}`, record.model.policy_version !== null && `policy ${record.model.policy_version}`,
    `${fmt(record.wall_s, 1)} s`].filter(Boolean).join(" · ");
  return [
    el("a", { href: "#", onclick: (e) => { e.preventDefault(); history.back(); } }, "‹ back to the table"),
    el("section", { class: "cell task", id: "episode", "data-id": record.id },
      el("h3", {}, `Task ${record.task.id}`), el("div", { class: "muted" }, meta),
      el("pre", {}, record.task_message || record.task.prompt),
      el("div", {}, `termination: ${record.termination}`, record.termination_detail ? ` (${record.termination_detail})` : ""),
      el("div", {}, `reward: ${reward ? fmt(reward.total) : "unscored"}`, breakdown ? ` (${breakdown})` : ""),
      el("div", {}, `final answer: ${text(record.final_answer)}`),
      record.error ? el("pre", { class: "error" }, record.error) : null,
      el("details", {}, el("summary", {}, "system prompt"), el("pre", {}, record.system_prompt))),
    record.steps.map(stepCell),
    record.unfinished_call ? el("div", { class: "notice" }, `unfinished model call at step ${record.unfinished_call.step_index}: ${record.unfinished_call.reason}`) : null,
  ];
}

// ------------------------------------------------------------------------------------------------ run

function plot(key, points) {
  const [w, h, pad] = [300, 150, 28];
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (w - 2 * pad);
  const sy = (y) => h - pad - (y1 === y0 ? 0.5 : (y - y0) / (y1 - y0)) * (h - 2 * pad);
  const svg = el("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}` },
    el("line", { svg: 1, class: "axis", x1: pad, y1: h - pad, x2: w - pad, y2: h - pad }),
    el("text", { svg: 1, x: 2, y: sy(y1) + 3 }, fmt(y1)), el("text", { svg: 1, x: 2, y: sy(y0) + 3 }, fmt(y0)),
    el("text", { svg: 1, x: sx(x0), y: h - 8 }, x0), el("text", { svg: 1, x: sx(x1) - 8, y: h - 8 }, x1),
    el("polyline", { svg: 1, points: points.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" ") }),
    points.map(([x, y]) => el("circle", { svg: 1, cx: sx(x), cy: sy(y), r: 3.5, onclick: () => setHash({ iter: x }) },
      el("title", { svg: 1 }, `iteration ${x}: ${fmt(y, 4)} (click: its episodes)`))));
  return el("div", { class: "plot", "data-metric": key }, el("div", {}, key), svg);
}

function renderRun() {
  const metrics = summary.metrics;
  const keys = [...new Set(metrics.flatMap((m) => Object.keys(m)))]
    .filter((k) => k !== "iteration" && k !== "time" && metrics.some((m) => typeof m[k] === "number"));
  const first = ["reward_mean", "success_rate"].filter((k) => keys.includes(k));
  const ordered = [...first, ...keys.filter((k) => !first.includes(k))];
  const counts = {};
  for (const r of rows) counts[r.iteration] = (counts[r.iteration] || 0) + 1;
  return [
    el("h2", {}, "Run"),
    el("div", {}, "iterations: ", Object.keys(counts).filter((k) => k !== "null").map((k) =>
      el("a", { href: `#iter=${k}`, class: "iteration" }, `${k} (${counts[k]} episodes) `))),
    el("div", { class: "plots" }, ordered.map((k) => plot(k, metrics.filter((m) => typeof m[k] === "number").map((m) => [m.iteration, m[k]])))),
    summary.reports.map((report) => {
      const columns = [...new Set(report.policies.flatMap((p) => Object.keys(p)))].filter((k) => k !== "trajectories");
      return el("div", { class: "report" }, el("h3", {}, `eval ${report.file} · split ${report.split}`),
        el("table", {}, el("tr", {}, columns.map((c) => el("th", {}, c))),
          report.policies.map((p) => el("tr", {}, columns.map((c) => el("td", {}, fmt(typeof p[c] === "object" && p[c] !== null ? JSON.stringify(p[c]) : p[c])))))));
    }),
  ];
}

// ---------------------------------------------------------------------------------------------- views

async function render() {
  const state = readHash();
  const main = document.getElementById("main");
  document.body.dataset.ready = "";
  const view = state.episode !== undefined ? "episode" : state.view || (summary.kind === "run" && Object.keys(state).length === 0 ? "run" : "table");
  const content = view === "episode" ? await renderEpisode(Number(state.episode)) : view === "run" ? renderRun() : renderTable(state);
  const notes = [];
  if (summary.skipped) notes.push(`${summary.skipped} lines were not trajectory records and are left out.`);
  if (DATA && summary.embedded < summary.episodes) notes.push(`This file embeds ${summary.embedded} of ${summary.episodes} whole episodes; the others are listed but cannot be opened (use nbagent view without --html).`);
  main.replaceChildren(el("div", {}, notes.map((n) => el("div", { class: "notice" }, n)), content));
  document.body.dataset.view = view;
  document.body.dataset.ready = "1";
}

async function start() {
  [summary, rows] = await Promise.all([source.summary(), source.rows()]);
  document.getElementById("where").textContent = `${summary.path} · ${summary.episodes} episodes`;
  document.getElementById("nav").replaceChildren(
    el("a", { href: "#view=table" }, "episodes"), summary.kind === "run" ? el("a", { href: "#view=run" }, "run") : "");
  window.addEventListener("hashchange", render);
  await render();
}

start().catch((error) => { document.getElementById("main").textContent = `error: ${error.message}`; });
