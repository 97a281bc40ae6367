// The Attention tab: an interactive attention explorer for minigpt runs, inside TensorBoard.
//
// TensorBoard loads this one ES module in an iframe whose <base href> is data/plugin/minigpt_attention/
// and calls render(). Every URL below is resolved against the module itself, so the page talks to the
// plugin's own routes and to nothing else: no framework, no CDN, no fonts from the network.
//
// Views (one tab): a model view (every layer x head as a small heatmap, with each head's strongest role),
// a head view (tokens in two columns, lines from a query to the keys it attends to, opacity = weight),
// a training-step slider with play/pause, and a chart of the selected head's role scores over training.

const HEAD_COLOURS = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#17becf", "#bcbd22", "#393b79", "#ad494a", "#7f7f7f",
];
const ROLE_STYLE = {
  previous_token: { short: "prev", colour: "#1f77b4", name: "previous token" },
  first_token: { short: "1st", colour: "#7f7f7f", name: "first token" },
  self: { short: "self", colour: "#2ca02c", name: "self" },
  duplicate_token: { short: "dup", colour: "#9467bd", name: "duplicate token" },
  induction: { short: "ind", colour: "#d62728", name: "induction" },
};
// A head whose best role is less than this far above uniform attention does nothing in particular:
// its badge is drawn faded.
const ROLE_MARGIN = 0.1;
// viridis in 17 stops, as the PNG maps use (matplotlib), on the same square-root scale
const VIRIDIS = (
  "440154 48186a 472d7b 424086 3b528b 33638d 2c728e 26828e 21918c " +
  "1fa088 28ae80 3fbc73 5ec962 84d44b addc30 d8e219 fde725"
).split(" ");
const MASKED_RGB = [0xd9, 0xd9, 0xd9]; // the causal mask's grey, as in the PNG maps
const PLAY_INTERVAL_MS = 700;
const LINE_LEVELS = 64; // opacity levels of the head view's lines
const REFRESH_INTERVAL_MS = 30000;
const CACHE_BYTES = 160e6; // decoded steps kept in memory (float32)

const state = {
  runs: [], // [{run, probes: [{probe, steps, n_layer, n_head, T}]}]
  emptyRuns: [],
  run: null,
  probe: null, // the selected probe's entry from /runs
  stepIndex: 0,
  tokens: [],
  weights: null, // Float32Array (n_layer, n_head, T, T) of the shown step
  roles: null, // /roles answer plus a step -> index map
  layer: 0,
  heads: new Set([0]), // heads drawn in the head view
  focusHead: 0, // the head whose role chart is shown
  hoverQuery: null,
  hoverKey: null,
  locked: null, // a clicked query stays active until clicked again
  playing: null, // interval id while playing
  loadToken: 0, // drops answers that arrive after the user moved on
};
const cache = new Map(); // "run|probe|step" -> Promise<Float32Array>
const el = {}; // the page's fixed elements, by name

// Marks the benchmark and the browser test read (performance.now() of this frame).
const marks = { moduleStart: performance.now(), modelViewDrawn: null, redraws: [] };
window.minigptAttention = { marks };

// ---------------------------------------------------------------------------------------------------
// data

function route(name, params = {}) {
  const url = new URL(name, import.meta.url);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, String(value));
  return url;
}

async function fetchOk(name, params) {
  let response;
  try {
    response = await fetch(route(name, params), { cache: "no-store" });
  } catch (err) {
    throw new Error(`could not reach TensorBoard (${err.message}); is it still running?`);
  }
  if (!response.ok) {
    const text = (await response.text()).trim().split("\n")[0];
    throw new Error(`${name}: HTTP ${response.status}${text ? ": " + text : ""}`);
  }
  return response;
}

async function getJson(name, params) {
  return (await fetchOk(name, params)).json();
}

let halfTable = null; // float16 bits -> float32, for browsers without Float16Array

function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

function decodeHalf(buffer) {
  if (typeof Float16Array === "function") return new Float32Array(new Float16Array(buffer));
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) halfTable[bits] = halfToFloat(bits);
  }
  const half = new Uint16Array(buffer);
  const out = new Float32Array(half.length);
  for (let i = 0; i < half.length; i++) out[i] = halfTable[half[i]];
  return out;
}

function attention(run, probe, step) {
  const key = `${run}|${probe.probe}|${step}`;
  if (cache.has(key)) return cache.get(key);
  const promise = fetchOk("attention", { run, probe: probe.probe, step }).then(async (response) => {
    const values = decodeHalf(await response.arrayBuffer());
    const expected = probe.n_layer * probe.n_head * probe.T * probe.T;
    if (values.length !== expected) {
      throw new Error(`attention at step ${step} has ${values.length} values, expected ${expected}`);
    }
    return values;
  });
  promise.catch(() => cache.delete(key)); // a failed step is fetched again next time
  cache.set(key, promise);
  const perStep = probe.n_layer * probe.n_head * probe.T * probe.T * 4;
  while (cache.size > Math.max(4, Math.floor(CACHE_BYTES / perStep))) {
    cache.delete(cache.keys().next().value); // the oldest entry
  }
  return promise;
}

function weightAt(layer, head, query, key) {
  const { n_head: nh, T } = state.probe;
  return state.weights[((layer * nh + head) * T + query) * T + key];
}

// ---------------------------------------------------------------------------------------------------
// helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

// Whitespace made visible as in the PNG maps: space, newline and tab; control characters as escapes.
function displayToken(token) {
  let out = "";
  for (const ch of token) {
    if (ch === " ") out += "\u2423";
    else if (ch === "\n") out += "\u21b5";
    else if (ch === "\t") out += "\u21e5";
    else if (/\p{C}/u.test(ch)) {
      const code = ch.codePointAt(0);
      out += code < 256 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
    } else out += ch;
  }
  return out || "\u2205";
}

function shortToken(token, max = 12) {
  const shown = displayToken(token);
  return [...shown].length <= max ? shown : [...shown].slice(0, max - 1).join("") + "\u2026";
}

function headColour(head) {
  return head < HEAD_COLOURS.length ? HEAD_COLOURS[head] : `hsl(${(head * 137.5) % 360} 60% 40%)`;
}

function hexRgb(hex) {
  const value = parseInt(hex.replace("#", ""), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

// 256-entry lookup: index = round(sqrt(weight) * 255), as matplotlib's PowerNorm(0.5) on viridis
const COLOUR_TABLE = (() => {
  const stops = VIRIDIS.map(hexRgb);
  const table = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (stops.length - 1);
    const lo = Math.min(Math.floor(x), stops.length - 2);
    const t = x - lo;
    for (let c = 0; c < 3; c++) table[i * 3 + c] = stops[lo][c] * (1 - t) + stops[lo + 1][c] * t;
  }
  return table;
})();

// The same colours as packed RGBA pixels indexed by round(weight * 4095): the model view writes one
// 32-bit value per pixel instead of taking a square root and three bytes (12 x 12 heads at 64 tokens
// are 590,000 pixels a step).
const WEIGHT_LEVELS = 4096;
const PIXEL_TABLE = (() => {
  const table = new Uint32Array(WEIGHT_LEVELS);
  const bytes = new Uint8Array(table.buffer);
  for (let i = 0; i < WEIGHT_LEVELS; i++) {
    const c = Math.round(Math.sqrt(i / (WEIGHT_LEVELS - 1)) * 255) * 3;
    bytes.set([COLOUR_TABLE[c], COLOUR_TABLE[c + 1], COLOUR_TABLE[c + 2], 255], i * 4);
  }
  return table;
})();
const MASKED_PIXEL = new Uint32Array(new Uint8Array([...MASKED_RGB, 255]).buffer)[0];

function cssColour(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// TensorBoard marks its dark mode with a class on its own <body>; this frame shares its origin, so it
// can follow along (and falls back to the browser's setting when it cannot see the parent).
function followDarkMode() {
  const media = window.matchMedia("(prefers-color-scheme: dark)");
  let parentBody = null;
  try {
    parentBody = window.parent !== window ? window.parent.document.body : null;
  } catch (err) {
    parentBody = null; // another origin
  }
  const apply = () => {
    const dark = parentBody ? parentBody.classList.contains("dark-mode") : media.matches;
    if (dark === document.documentElement.classList.contains("dark")) return;
    document.documentElement.classList.toggle("dark", dark);
    if (state.weights) drawAll(); // canvas and chart colours are read when drawn
  };
  if (parentBody) new MutationObserver(apply).observe(parentBody, { attributes: true, attributeFilter: ["class"] });
  else media.addEventListener("change", apply);
  apply();
}

function formatStep(step) {
  return step.toLocaleString("en-US");
}

function currentStep() {
  return state.probe ? state.probe.steps[state.stepIndex] : null;
}

function finite(value) {
  return typeof value === "number" && Number.isFinite(value);
}

// ---------------------------------------------------------------------------------------------------
// page skeleton

const STYLE = `
:root {
  --fg: #212121; --muted: #616161; --faint: #9e9e9e; --line: #e0e0e0; --bg: #fff; --panel: #f5f5f5;
  --accent: #f57c00; --focus: #1976d2; --control: #bdbdbd; --gridline: #eeeeee; --query: #ffe0b2; --locked: #ffcc80;
  --mono: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, "Liberation Mono", monospace;
}
/* TensorBoard's dark mode (its toggle, or the browser's setting), followed from the parent page */
:root.dark {
  --fg: #e0e0e0; --muted: #b0b0b0; --faint: #808080; --line: #4a4a4a; --bg: #303030; --panel: #3a3a3a;
  --control: #6a6a6a; --gridline: #444444; --query: #7a4a12; --locked: #9a5c10; --focus: #64b5f6;
}
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; }
body { font: 13px/1.35 Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
#app { display: flex; flex-direction: column; height: 100vh; }
.toolbar { display: flex; align-items: center; gap: 14px; padding: 8px 14px; border-bottom: 1px solid var(--line);
  flex-wrap: wrap; }
.controls { display: flex; align-items: center; gap: 14px; flex: 1; flex-wrap: wrap; }
.toolbar label { color: var(--muted); display: flex; align-items: center; gap: 6px; }
select, button { font: inherit; color: var(--fg); }
select { padding: 2px 4px; border: 1px solid var(--control); border-radius: 3px; background: var(--bg);
  max-width: 260px; }
button { border: 1px solid var(--control); background: var(--bg); border-radius: 3px; padding: 2px 8px;
  cursor: pointer; }
button:hover { background: var(--panel); }
.steps { display: flex; align-items: center; gap: 8px; flex: 1 1 320px; min-width: 260px; }
.steps input[type=range] { flex: 1; accent-color: var(--accent); }
#play { width: 34px; }
#step-label { min-width: 150px; font-variant-numeric: tabular-nums; }
#status { color: var(--muted); font-size: 12px; }
.main { flex: 1; display: grid; grid-template-columns: minmax(300px, 1fr) auto minmax(280px, 330px);
  min-height: 0; }
.panel { padding: 10px 14px; min-height: 0; overflow: auto; border-right: 1px solid var(--line); }
.panel:last-child { border-right: none; }
h2 { font-size: 13px; font-weight: 500; margin: 0 0 6px; color: var(--fg); display: flex; align-items: center;
  gap: 8px; flex-wrap: wrap; }
h2 .hint { font-weight: 400; color: var(--muted); font-size: 12px; }
.message { margin: 40px auto; max-width: 640px; padding: 16px 20px; border: 1px solid var(--line);
  border-radius: 4px; background: var(--panel); line-height: 1.5; }
.message h1 { font-size: 15px; font-weight: 500; margin: 0 0 8px; }
.message code { font-family: var(--mono); font-size: 12px; background: var(--bg); padding: 1px 4px; }
.error { color: #b71c1c; }
.inline-message { color: var(--muted); padding: 12px 0; }

.grid { position: relative; }
#grid-canvas { display: block; }
.cell { position: absolute; cursor: pointer; border: 2px solid transparent; border-radius: 3px; }
.cell:hover { border-color: #90caf9; }
.cell.shown { border-color: var(--c); }
.cell.focused { box-shadow: 0 0 0 1px var(--fg); }
.legend { display: flex; flex-wrap: wrap; gap: 4px 12px; margin-top: 8px; font-size: 11px; color: var(--muted);
  align-items: center; }
.legend .chip { display: inline-block; width: 10px; height: 10px; border-radius: 2px; vertical-align: -1px;
  margin-right: 3px; }
.scale { display: inline-block; width: 90px; height: 10px; vertical-align: -1px; margin: 0 4px; }

.headview-controls { display: flex; flex-wrap: wrap; gap: 3px; margin-bottom: 6px; max-width: 330px;
  align-items: center; }
.headchip { display: inline-block; min-width: 24px; padding: 0 4px; border: 2px solid var(--c); border-radius: 3px;
  background: var(--c); color: #fff; font-size: 11px; line-height: 16px; text-align: center; cursor: pointer;
  user-select: none; font-variant-numeric: tabular-nums; }
.headchip.off { background: var(--bg); color: var(--muted); border-color: var(--control); }
.headview-controls button { font-size: 11px; padding: 0 6px; line-height: 16px; }
#head-view { display: flex; flex-direction: column; }
.tokens-scroll { flex: 1; min-height: 0; overflow-y: auto; overflow-x: hidden; }
.tokens { display: flex; align-items: flex-start; position: relative; }
.column { display: flex; flex-direction: column; }
.tok { font-family: var(--mono); white-space: pre; padding: 0 6px; border-radius: 2px; cursor: default;
  overflow: hidden; }
.column.queries .tok { text-align: right; cursor: pointer; }
.tok.active { background: var(--query); outline: 1px solid var(--accent); }
.tok.locked { background: var(--locked); }
#lines { display: block; }

.weights-list { font-size: 12px; margin-bottom: 10px; }
.weights-list .head { margin: 6px 0 2px; display: flex; align-items: center; gap: 5px; font-weight: 500; }
.weights-list .row { display: grid; grid-template-columns: 96px 1fr 46px; gap: 6px; align-items: center;
  font-variant-numeric: tabular-nums; }
.weights-list .row .key { font-family: var(--mono); white-space: pre; overflow: hidden; text-overflow: ellipsis; }
.weights-list .row .bar { height: 8px; border-radius: 2px; }
.weights-list .row .value { text-align: right; font-family: var(--mono); }
.weights-list .idx { color: var(--faint); }
#chart { display: block; }
#chart text { font-size: 10px; fill: var(--muted); }
.chart-legend { display: grid; grid-template-columns: 1fr auto; gap: 1px 8px; font-size: 11px; margin-top: 4px; }
.line-chip { display: inline-block; width: 12px; border-top: 3px solid; vertical-align: 3px; margin-right: 4px; }
.line-chip.dashed { border-top: 2px dashed; }
.chart-legend .v { font-variant-numeric: tabular-nums; text-align: right; color: var(--muted); }
.tooltip { position: fixed; pointer-events: none; background: rgba(33, 33, 33, 0.92); color: #fff;
  font-size: 12px; padding: 5px 8px; border-radius: 3px; z-index: 10; max-width: 320px; display: none;
  font-variant-numeric: tabular-nums; white-space: pre; }
`;

function buildPage(root) {
  document.head.append(h("style", {}, STYLE));
  el.run = h("select", { id: "run", onchange: () => selectRun(el.run.value) });
  el.probe = h("select", { id: "probe", onchange: () => selectProbe(el.probe.value) });
  el.play = h("button", { id: "play", title: "Play / pause (space)", onclick: togglePlay }, "\u25b6");
  el.slider = h("input", { id: "step", type: "range", min: "0", max: "0", value: "0", "aria-label": "training step" });
  el.slider.addEventListener("input", () => {
    stopPlay();
    showStep(Number(el.slider.value));
  });
  el.stepLabel = h("span", { id: "step-label" });
  el.reload = h("button", { id: "reload", title: "Look for new runs and steps, and read every step again" }, "\u21bb");
  el.reload.addEventListener("click", () => {
    cache.clear(); // a run restarted in the same folder has new weights under the same steps
    loadRuns(true);
  });
  el.status = h("span", { id: "status" });
  el.controls = h(
    "div",
    { class: "controls" },
    h("label", {}, "Run", el.run),
    h("label", {}, "Probe", el.probe),
    h("div", { class: "steps" }, el.play, el.slider, el.stepLabel),
  );
  const toolbar = h("div", { class: "toolbar" }, el.controls, el.reload, el.status);

  el.grid = h("div", { id: "grid", class: "grid" });
  el.gridTitle = h("span", { class: "hint" });
  el.gridLegend = h("div", { class: "legend" });
  const modelPanel = h(
    "div",
    { class: "panel", id: "model-view" },
    h("h2", {}, "Model view", el.gridTitle),
    el.grid,
    el.gridLegend,
  );

  el.layer = h("select", { id: "layer", onchange: () => selectHead(Number(el.layer.value), null) });
  el.headChips = h("div", { class: "headview-controls", id: "head-chips" });
  el.queries = h("div", { class: "column queries", id: "queries" });
  el.keys = h("div", { class: "column keys", id: "keys" });
  el.lines = h("canvas", { id: "lines" });
  el.tokens = h("div", { class: "tokens" }, el.queries, el.lines, el.keys);
  el.tokens.addEventListener("mouseleave", () => {
    state.hoverQuery = null;
    state.hoverKey = null;
    hideTooltip();
    drawHeadView();
  });
  const headPanel = h(
    "div",
    { class: "panel", id: "head-view" },
    h("h2", {}, "Head view", h("label", { class: "hint" }, "layer ", el.layer)),
    el.headChips,
    h("div", { class: "tokens-scroll" }, el.tokens),
  );

  el.weightsTitle = h("h2", {}, "Weights");
  el.weightsList = h("div", { class: "weights-list", id: "weights" });
  el.chartTitle = h("h2", {}, "Roles");
  el.chart = svg("svg", { id: "chart", width: "300", height: "176" });
  el.chartLegend = h("div", { class: "chart-legend", id: "chart-legend" });
  const sidePanel = h(
    "div",
    { class: "panel", id: "side" },
    el.weightsTitle,
    el.weightsList,
    el.chartTitle,
    el.chart,
    el.chartLegend,
  );

  el.main = h("div", { class: "main" }, modelPanel, headPanel, sidePanel);
  el.message = h("div", { class: "message", id: "message" });
  el.tooltip = h("div", { class: "tooltip", id: "tooltip" });
  root.append(h("div", { id: "app" }, toolbar, el.message, el.main), el.tooltip);
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => {
    if (!state.weights) return;
    buildHeadView();
    fitGrid();
    drawAll();
  });
}

function showMessage(title, body, { error = false, retry = false } = {}) {
  el.main.style.display = "none";
  el.controls.style.visibility = "hidden"; // nothing to choose yet
  el.message.style.display = "";
  el.message.replaceChildren(h("h1", { class: error ? "error" : "" }, title));
  for (const paragraph of body) el.message.append(h("p", {}, ...paragraph));
  if (retry) el.message.append(h("button", { onclick: () => loadRuns(false) }, "Try again"));
}

function showMain() {
  el.controls.style.visibility = "";
  el.message.style.display = "none";
  el.main.style.display = "";
}

function code(text) {
  return h("code", {}, text);
}

// ---------------------------------------------------------------------------------------------------
// loading runs, probes and steps

async function loadRuns(keep) {
  if (!keep) showMessage("Loading attention\u2026", []);
  el.status.textContent = keep ? "refreshing\u2026" : "";
  let answer;
  try {
    answer = await getJson("runs");
  } catch (err) {
    if (keep && state.probe) {
      el.status.textContent = `refresh failed: ${err.message}`;
      return;
    }
    showMessage("Could not load the runs", [[err.message]], { error: true, retry: true });
    return;
  }
  // e.g. TensorBoard started with a --samples_per_plugin limit for this plugin: not every step is kept
  el.status.textContent = answer.note || "";
  state.runs = answer.runs || [];
  state.emptyRuns = answer.empty_runs || [];
  if (!state.runs.length) {
    state.run = null;
    state.probe = null;
    showNoRuns();
    return;
  }
  fillRunSelect();
  const previous = state.run && state.runs.find((r) => r.run === state.run);
  if (keep && previous) {
    const probe = previous.probes.find((p) => p.probe === state.probe?.probe);
    if (probe && sameShape(probe, state.probe)) {
      // same run and probe: keep the view, take any new steps
      const step = currentStep();
      const atEnd = state.stepIndex === state.probe.steps.length - 1;
      state.probe = probe;
      fillProbeSelect(previous);
      const index = probe.steps.indexOf(step);
      setSlider(atEnd && !state.playing ? probe.steps.length - 1 : Math.max(0, index));
      await loadRoles();
      showMain();
      await showStep(state.stepIndex);
      return;
    }
  }
  await selectRun(previous ? previous.run : state.runs[0].run);
}

function sameShape(a, b) {
  return b && a.n_layer === b.n_layer && a.n_head === b.n_head && a.T === b.T;
}

function showNoRuns() {
  if (state.emptyRuns.length) {
    showMessage("No attention tensors in these runs", [
      [`Runs found without attention: ${state.emptyRuns.join(", ")}.`],
      [
        "They were written before minigpt logged raw attention, or with ",
        code("--log.no_attention_tensors"),
        " or ",
        code("--log.no_attention_maps"),
        ", or they have not reached their first evaluation yet. Train a run with ",
        code("python train.py"),
        " (every evaluation logs the attention of every layer and head), or probe a prompt with ",
        code('python sample.py --attention --prompt "..."'),
        ", then press \u21bb.",
      ],
    ], { retry: true });
  } else {
    showMessage("No runs with attention yet", [
      [
        "Start a run with ",
        code("python train.py"),
        " and point TensorBoard at its folder (",
        code("tensorboard --logdir runs"),
        "). Each evaluation logs the attention of every layer and head on a fixed probe text; ",
        code('python sample.py --attention --prompt "..."'),
        " logs your own text.",
      ],
    ], { retry: true });
  }
}

function fillRunSelect() {
  const options = state.runs.map((r) => h("option", { value: r.run }, r.run));
  for (const name of state.emptyRuns) {
    options.push(h("option", { value: name, disabled: "" }, `${name} (no attention tensors)`));
  }
  el.run.replaceChildren(...options);
  if (state.run) el.run.value = state.run;
}

function fillProbeSelect(run) {
  el.probe.replaceChildren(
    ...run.probes.map((p) => h("option", { value: p.probe }, `${p.probe} (${p.T} tokens)`)),
  );
  if (state.probe) el.probe.value = state.probe.probe;
}

async function selectRun(name) {
  const run = state.runs.find((r) => r.run === name);
  if (!run) return;
  state.run = name;
  el.run.value = name;
  const keep = run.probes.find((p) => p.probe === state.probe?.probe);
  const probe = keep || run.probes.find((p) => p.probe === "text") || run.probes[0];
  state.probe = null;
  fillProbeSelect(run);
  await selectProbe(probe.probe);
}

async function selectProbe(name) {
  const run = state.runs.find((r) => r.run === state.run);
  const probe = run.probes.find((p) => p.probe === name);
  const previousStep = currentStep();
  const token = ++state.loadToken;
  stopPlay();
  state.probe = probe;
  el.probe.value = name;
  state.weights = null;
  state.locked = null;
  state.hoverQuery = null;
  if (state.layer >= probe.n_layer) state.layer = 0;
  state.heads = new Set([...state.heads].filter((head) => head < probe.n_head));
  if (!state.heads.size) state.heads.add(0);
  if (state.focusHead >= probe.n_head) state.focusHead = [...state.heads][0];
  // stay at the same training step where this probe has it, else show the newest
  const index = probe.steps.indexOf(previousStep);
  setSlider(index >= 0 ? index : probe.steps.length - 1);
  // the tokens, the roles and the shown step's weights load side by side
  attention(state.run, probe, probe.steps[state.stepIndex]).catch(() => null); // showStep reports errors
  try {
    const [tokens] = await Promise.all([getJson("tokens", { run: state.run, probe: name }), loadRoles()]);
    if (token !== state.loadToken) return;
    state.tokens = tokens.tokens;
  } catch (err) {
    if (token !== state.loadToken) return;
    showMessage(`Could not load the tokens of ${state.run} / ${name}`, [[err.message]], { error: true, retry: true });
    return;
  }
  showMain();
  buildHeadView(); // first: the model view takes the width the head view leaves
  buildGrid();
  await showStep(state.stepIndex);
}

async function loadRoles() {
  // Role scores are measured once per evaluation and logged with the text probe (the induction score
  // included); the route answers with those for a probe that has none of its own.
  try {
    const roles = await getJson("roles", { run: state.run, probe: state.probe.probe });
    roles.index = new Map((roles.steps || []).map((step, i) => [step, i]));
    state.roles = roles.roles?.length && roles.steps?.length ? roles : null;
  } catch (err) {
    state.roles = null;
    // without roles the model view shows no badges and the chart says so; the weights still show
    el.status.textContent = `roles: ${err.message}`;
  }
}

function setSlider(index) {
  state.stepIndex = index;
  el.slider.max = String(state.probe.steps.length - 1);
  el.slider.value = String(index);
  updateStepLabel();
}

function updateStepLabel() {
  const steps = state.probe.steps;
  el.stepLabel.textContent = `step ${formatStep(steps[state.stepIndex])}  (${state.stepIndex + 1} / ${steps.length})`;
}

async function showStep(index) {
  const probe = state.probe;
  if (!probe) return;
  const started = performance.now();
  const token = ++state.loadToken;
  setSlider(index);
  let weights;
  try {
    weights = await attention(state.run, probe, probe.steps[index]);
  } catch (err) {
    if (token !== state.loadToken) return;
    state.weights = null;
    el.grid.replaceChildren(h("div", { class: "inline-message error" }, `Could not load this step: ${err.message}`));
    el.lines.getContext("2d").clearRect(0, 0, el.lines.width, el.lines.height);
    el.weightsList.replaceChildren();
    return;
  }
  if (token !== state.loadToken) return; // the user has moved on
  const fetched = performance.now();
  if (!el.grid.querySelector("canvas")) buildGrid();
  state.weights = weights;
  drawAll();
  const ended = performance.now();
  marks.redraws.push({ step: probe.steps[index], start: started, fetched, end: ended });
  if (marks.redraws.length > 200) marks.redraws.shift();
  if (marks.modelViewDrawn === null) marks.modelViewDrawn = ended;
  document.body.dataset.step = String(probe.steps[index]); // tests wait on this
  prefetchAround(index);
}

let prefetchRound = 0;

// Fetch the other steps in the background, nearest first, one at a time, so that the slider and
// play move through memory rather than the network. A newer round (another run or probe) ends this one.
async function prefetchAround(index) {
  const round = ++prefetchRound;
  const { run, probe } = state;
  const order = probe.steps
    .map((step, i) => [Math.abs(i - index) + (i < index ? 0.5 : 0), step])
    .sort((a, b) => a[0] - b[0])
    .map(([, step]) => step);
  const limit = Math.max(4, Math.floor(CACHE_BYTES / (probe.n_layer * probe.n_head * probe.T * probe.T * 4)) - 2);
  for (const step of order.slice(0, limit)) {
    if (round !== prefetchRound) return;
    await attention(run, probe, step).catch(() => null);
  }
}

// ---------------------------------------------------------------------------------------------------
// model view

// Where things sit in the model view's canvas (CSS pixels): a label column, a header row, then one
// cell per head, its heatmap above its role badge.
const GRID = { left: 24, top: 16, gap: 6, badge: 13 };

function cellSize() {
  const { n_layer: nl, n_head: nh } = state.probe;
  const width = el.grid.parentElement.clientWidth - 28 - GRID.left;
  const height = window.innerHeight - el.main.getBoundingClientRect().top - 72 - GRID.top; // title, legend
  const byWidth = Math.floor(width / nh) - GRID.gap;
  const byHeight = Math.floor(height / nl) - GRID.gap - GRID.badge;
  return Math.max(14, Math.min(160, byWidth, byHeight));
}

function cellOrigin(layer, head) {
  return [GRID.left + head * (el.cellSize + GRID.gap), GRID.top + layer * (el.cellSize + GRID.badge + GRID.gap)];
}

// One canvas for all heads: 144 small canvases cost the browser more to lay out and composite than
// the pixels cost to compute. The clickable cells are plain elements over it that never change with
// the step, so a step redraws pixels only.
function buildGrid() {
  const { n_layer: nl, n_head: nh, T } = state.probe;
  el.atlas = document.createElement("canvas"); // every head at T x T pixels, scaled when painted
  el.atlas.width = nh * T;
  el.atlas.height = nl * T;
  el.atlasContext = el.atlas.getContext("2d");
  el.atlasImage = el.atlasContext.createImageData(nh * T, nl * T);
  el.atlasPixels = new Uint32Array(el.atlasImage.data.buffer);
  el.gridCanvas = h("canvas", { id: "grid-canvas" });
  el.cells = [];
  const cells = [];
  for (let layer = 0; layer < nl; layer++) {
    const row = [];
    for (let head = 0; head < nh; head++) {
      const cell = h("div", { class: "cell", "data-layer": String(layer), "data-head": String(head) });
      cell.style.setProperty("--c", headColour(head));
      cell.addEventListener("click", () => selectHead(layer, head));
      cell.addEventListener("mousemove", (event) => showTooltip(event, cellTooltip(layer, head)));
      cell.addEventListener("mouseleave", hideTooltip);
      row.push(cell);
      cells.push(cell);
    }
    el.cells.push(row);
  }
  el.grid.replaceChildren(el.gridCanvas, ...cells);
  el.gridTitle.textContent = `${nl} layers \u00d7 ${nh} heads \u00b7 click a head to open it`;
  fitGrid();
  buildGridLegend();
}

// Size the canvas and place the cells for the window (on load and on resize, not at every step).
function fitGrid() {
  const { n_layer: nl, n_head: nh } = state.probe;
  const size = (el.cellSize = cellSize());
  const dpr = window.devicePixelRatio || 1;
  const width = GRID.left + nh * (size + GRID.gap);
  const height = GRID.top + nl * (size + GRID.badge + GRID.gap);
  el.gridCanvas.width = Math.round(width * dpr);
  el.gridCanvas.height = Math.round(height * dpr);
  el.gridCanvas.style.width = `${width}px`;
  el.gridCanvas.style.height = `${height}px`;
  for (let layer = 0; layer < nl; layer++) {
    for (let head = 0; head < nh; head++) {
      const [x, y] = cellOrigin(layer, head);
      Object.assign(el.cells[layer][head].style, {
        left: `${x - 3}px`,
        top: `${y - 3}px`,
        width: `${size + 6}px`,
        height: `${size + GRID.badge + 6}px`,
      });
    }
  }
}

function buildGridLegend() {
  const scale = h("canvas", { class: "scale", width: "90", height: "1" });
  const ctx = scale.getContext("2d");
  const image = ctx.createImageData(90, 1);
  for (let x = 0; x < 90; x++) {
    const i = Math.round(Math.sqrt(x / 89) * 255) * 3;
    image.data.set([COLOUR_TABLE[i], COLOUR_TABLE[i + 1], COLOUR_TABLE[i + 2], 255], x * 4);
  }
  ctx.putImageData(image, 0, 0);
  const items = [h("span", {}, "weight 0", scale, "1 (square-root scale; grey: masked)")];
  if (state.roles) {
    // each head's badge: its strongest role, that is the one furthest above uniform attention
    const roles = state.roles.roles.map((role) => {
      const style = ROLE_STYLE[role] || { short: role, colour: "#555", name: role };
      const chip = h("span", { class: "chip", style: `background:${style.colour}` });
      const label = style.short === style.name ? style.name : `${style.short} ${style.name}`;
      return h("span", { title: style.name }, chip, label);
    });
    const faded = `faded: less than ${ROLE_MARGIN} above uniform attention`;
    items.push(h("span", { title: faded }, "badges, the strongest role:"), ...roles);
  } else {
    items.push(h("span", {}, "no role scores in this run"));
  }
  el.gridLegend.replaceChildren(...items);
}

function drawGrid() {
  const { n_layer: nl, n_head: nh, T } = state.probe;
  const weights = state.weights;
  const pixels = el.atlasPixels;
  const width = nh * T;
  const top = WEIGHT_LEVELS - 1;
  for (let layer = 0; layer < nl; layer++) {
    for (let head = 0; head < nh; head++) {
      const base = (layer * nh + head) * T * T;
      for (let q = 0; q < T; q++) {
        const out = (layer * T + q) * width + head * T;
        for (let k = 0; k < T; k++) {
          const w = weights[base + q * T + k];
          if (w > 0) pixels[out + k] = PIXEL_TABLE[w >= 1 ? top : Math.round(w * top)];
          // a zero above the diagonal is the causal mask: grey, as in the PNG maps
          else pixels[out + k] = k > q ? MASKED_PIXEL : PIXEL_TABLE[0];
        }
      }
    }
  }
  el.atlasContext.putImageData(el.atlasImage, 0, 0);
  paintGrid();
  markCells();
}

function paintGrid() {
  const { n_layer: nl, n_head: nh, T } = state.probe;
  const size = el.cellSize;
  const dpr = window.devicePixelRatio || 1;
  const ctx = el.gridCanvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, el.gridCanvas.width, el.gridCanvas.height);
  ctx.font = "11px Roboto, Arial, sans-serif";
  ctx.fillStyle = cssColour("--muted");
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  for (let head = 0; head < nh; head++) ctx.fillText(`H${head}`, cellOrigin(0, head)[0] + size / 2, GRID.top / 2);
  for (let layer = 0; layer < nl; layer++) {
    ctx.fillText(`L${layer}`, GRID.left / 2 - 2, cellOrigin(layer, 0)[1] + size / 2);
  }
  // enlarging keeps each weight a sharp square; shrinking (64 tokens in a small cell) averages
  ctx.imageSmoothingEnabled = size * dpr < T;
  ctx.imageSmoothingQuality = "medium";
  for (let layer = 0; layer < nl; layer++) {
    for (let head = 0; head < nh; head++) {
      const [x, y] = cellOrigin(layer, head);
      ctx.drawImage(el.atlas, head * T, layer * T, T, T, x, y, size, size);
    }
  }
  drawBadges(ctx);
}

// The cells' outlines: the heads shown in the head view in their colours, the charted head in black.
function markCells() {
  const { n_layer: nl, n_head: nh } = state.probe;
  for (let layer = 0; layer < nl; layer++) {
    for (let head = 0; head < nh; head++) {
      const cell = el.cells[layer][head];
      cell.classList.toggle("focused", layer === state.layer && head === state.focusHead);
      cell.classList.toggle("shown", layer === state.layer && state.heads.has(head));
    }
  }
}

// The role scores of one head at the shown step: [{role, score, uniform}], or null without roles.
function headRoles(layer, head) {
  const roles = state.roles;
  if (!roles) return null;
  const i = roles.index.get(currentStep());
  if (i === undefined) return null;
  return roles.roles.map((role, r) => ({
    role,
    score: roles.scores[i][r][layer][head],
    uniform: roles.uniform?.[role] ?? 0,
  }));
}

// The role a head's badge names: the one furthest above uniform attention. The first token is where a
// head parks attention it does not need (the "attention sink"), so it names a head only when no other
// role stands out: an induction head that also parks on the first token is still an induction head.
function strongestRole(scores) {
  const best = (entries) => {
    let top = null;
    for (const entry of entries) {
      if (finite(entry.score) && (!top || entry.score - entry.uniform > top.score - top.uniform)) top = entry;
    }
    return top;
  };
  const other = best(scores.filter((entry) => entry.role !== "first_token"));
  return other && other.score - other.uniform >= ROLE_MARGIN ? other : best(scores);
}

function drawBadges(ctx) {
  const { n_layer: nl, n_head: nh } = state.probe;
  const size = el.cellSize;
  const badges = [];
  const [weakFill, weakText] = [cssColour("--panel"), cssColour("--muted")];
  ctx.font = "10px Roboto, Arial, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  for (let layer = 0; layer < nl; layer++) {
    for (let head = 0; head < nh; head++) {
      const scores = headRoles(layer, head);
      const best = scores && strongestRole(scores);
      if (!best) continue;
      const style = ROLE_STYLE[best.role] || { short: best.role, colour: "#555555" };
      const weak = best.score - best.uniform < ROLE_MARGIN;
      const text = `${style.short} ${best.score.toFixed(2).replace(/^0/, "")}`;
      const [x, y] = cellOrigin(layer, head);
      ctx.fillStyle = weak ? weakFill : style.colour;
      ctx.fillRect(x, y + size + 1, size, GRID.badge - 1);
      if (size >= 26) {
        // smaller cells keep the colour only: the text would be squeezed past reading (hover tells)
        ctx.fillStyle = weak ? weakText : "#ffffff";
        ctx.fillText(text, x + size / 2, y + size + 1 + GRID.badge / 2, size - 2);
      }
      badges.push(`${layer},${head},${best.role},${best.score.toFixed(3)}`);
    }
  }
  el.gridCanvas.dataset.badges = badges.join(";"); // what the canvas shows, for tests and screen readers
}

function cellTooltip(layer, head) {
  const lines = [`layer ${layer}, head ${head} \u00b7 step ${formatStep(currentStep())}`];
  const scores = headRoles(layer, head);
  if (scores) {
    for (const { role, score, uniform } of scores) {
      const name = (ROLE_STYLE[role]?.name || role).padEnd(16);
      lines.push(`${name}${finite(score) ? score.toFixed(3) : "  \u2013  "}   (uniform ${uniform.toFixed(3)})`);
    }
  }
  lines.push("click: open in the head view");
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------------
// head view

function rowHeight() {
  const T = state.probe.T;
  const top = el.tokens.getBoundingClientRect().top;
  const available = window.innerHeight - Math.max(top, 80) - 16;
  return Math.max(14, Math.min(22, Math.floor(available / T)));
}

function buildHeadView() {
  const { n_layer: nl, T } = state.probe;
  el.layer.replaceChildren(...Array.from({ length: nl }, (_, l) => h("option", { value: String(l) }, `L${l}`)));
  el.layer.value = String(state.layer);
  const row = rowHeight();
  const width = Math.min(120, 12 + 8 * Math.max(4, ...state.tokens.map((t) => [...shortToken(t)].length)));
  const make = (side) =>
    state.tokens.map((token, i) => {
      const node = h(
        "div",
        { class: "tok", "data-i": String(i), title: `${side} ${i}: ${JSON.stringify(token)}` },
        shortToken(token),
      );
      node.style.height = node.style.lineHeight = `${row}px`;
      node.style.fontSize = `${Math.min(13, row - 3)}px`;
      node.style.width = `${width}px`;
      return node;
    });
  el.queries.replaceChildren(...make("query"));
  el.keys.replaceChildren(...make("key"));
  el.queryNodes = [...el.queries.children];
  el.keyNodes = [...el.keys.children];
  el.queryNodes.forEach((node, i) => {
    node.addEventListener("mouseenter", () => {
      if (state.locked !== null) return;
      state.hoverQuery = i;
      drawHeadView();
    });
    node.addEventListener("click", () => {
      state.locked = state.locked === i ? null : i;
      state.hoverQuery = i;
      drawHeadView();
    });
  });
  el.keyNodes.forEach((node, k) => {
    node.addEventListener("mouseenter", () => {
      state.hoverKey = k;
      if (activeQuery() === null) drawHeadView();
    });
    node.addEventListener("mousemove", (event) => {
      const q = activeQuery();
      if (q !== null) showTooltip(event, pairTooltip(q, k));
    });
    node.addEventListener("mouseleave", () => {
      state.hoverKey = null;
      hideTooltip();
      if (activeQuery() === null) drawHeadView();
    });
  });
  const dpr = window.devicePixelRatio || 1;
  const linesWidth = window.innerWidth >= 1200 ? 150 : 100; // narrow windows keep room for the grid
  el.lines.width = linesWidth * dpr;
  el.lines.height = T * row * dpr;
  el.lines.style.width = `${linesWidth}px`;
  el.lines.style.height = `${T * row}px`;
  el.rowHeight = row;
  buildHeadChips();
}

function buildHeadChips() {
  const nh = state.probe.n_head;
  const chips = [];
  for (let head = 0; head < nh; head++) {
    const chip = h(
      "span",
      { class: "headchip", "data-head": String(head), role: "checkbox", title: `show head ${head} (click to toggle)` },
      String(head),
    );
    chip.style.setProperty("--c", headColour(head));
    chip.addEventListener("click", () => {
      if (state.heads.has(head)) {
        state.heads.delete(head);
        if (state.focusHead === head && state.heads.size) state.focusHead = [...state.heads][0];
      } else {
        state.heads.add(head);
        state.focusHead = head;
      }
      refreshSelection();
    });
    chips.push(chip);
  }
  const all = h("button", { title: "Show every head of this layer" }, "all");
  all.addEventListener("click", () => {
    for (let head = 0; head < nh; head++) state.heads.add(head);
    refreshSelection();
  });
  const none = h("button", { title: "Hide every head" }, "none");
  none.addEventListener("click", () => {
    state.heads.clear();
    refreshSelection();
  });
  el.headChips.replaceChildren(h("span", { class: "hint" }, "heads"), ...chips, all, none);
}

function updateHeadChips() {
  for (const chip of el.headChips.querySelectorAll(".headchip")) {
    const on = state.heads.has(Number(chip.dataset.head));
    chip.classList.toggle("off", !on);
    chip.setAttribute("aria-checked", String(on));
  }
}

// Open one head: the model view's click and the layer select both land here.
function selectHead(layer, head) {
  state.layer = layer;
  el.layer.value = String(layer);
  if (head !== null) {
    state.heads = new Set([head]);
    state.focusHead = head;
  }
  refreshSelection();
}

function refreshSelection() {
  if (!state.weights) return;
  updateHeadChips();
  drawGrid();
  drawHeadView();
  drawChart();
}

function activeQuery() {
  return state.locked !== null ? state.locked : state.hoverQuery;
}

function drawHeadView() {
  if (!state.weights) return;
  const T = state.probe.T;
  const layer = state.layer;
  const heads = [...state.heads].sort((a, b) => a - b);
  const query = activeQuery();
  const key = query === null ? state.hoverKey : null;
  const dpr = window.devicePixelRatio || 1;
  const ctx = el.lines.getContext("2d");
  const width = el.lines.width / dpr;
  const row = el.rowHeight;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, T * row);
  ctx.lineWidth = 2;
  // one query: its lines at full weight; one key: every query's line into it; nothing: all lines, faint
  const faint = query === null && key === null ? 0.5 : 1;
  const qs = query !== null ? [query] : key !== null ? range(key, T) : range(0, T);
  for (const head of heads) {
    // lines are grouped by opacity, one path per level: a few dozen strokes instead of thousands
    const paths = Array.from({ length: LINE_LEVELS }, () => null);
    for (const q of qs) {
      const ks = key !== null ? [key] : range(0, q + 1);
      for (const k of ks) {
        const level = Math.round(Math.min(1, weightAt(layer, head, q, k) * faint) * (LINE_LEVELS - 1));
        if (level === 0) continue; // invisible anyway
        const path = paths[level] || (paths[level] = new Path2D());
        path.moveTo(2, (q + 0.5) * row);
        path.lineTo(width - 2, (k + 0.5) * row);
      }
    }
    ctx.strokeStyle = headColour(head);
    paths.forEach((path, level) => {
      if (!path) return;
      ctx.globalAlpha = level / (LINE_LEVELS - 1);
      ctx.stroke(path);
    });
  }
  ctx.globalAlpha = 1;
  // shade each key by its largest weight over the shown heads, in that head's colour
  el.queryNodes.forEach((node, i) => {
    node.classList.toggle("active", i === query);
    node.classList.toggle("locked", i === state.locked);
  });
  el.keyNodes.forEach((node, k) => {
    let best = 0;
    let bestHead = null;
    if (query !== null && k <= query) {
      for (const head of heads) {
        const w = weightAt(layer, head, query, k);
        if (w > best) {
          best = w;
          bestHead = head;
        }
      }
    }
    node.style.background = bestHead === null ? "" : withAlpha(headColour(bestHead), Math.min(0.85, best));
    node.classList.toggle("active", k === key);
  });
  drawWeightsList(query, heads);
}

function range(start, end) {
  return Array.from({ length: end - start }, (_, i) => start + i);
}

function withAlpha(colour, alpha) {
  if (colour.startsWith("#")) {
    const [r, g, b] = hexRgb(colour);
    return `rgba(${r}, ${g}, ${b}, ${alpha.toFixed(3)})`;
  }
  return colour.replace(")", ` / ${alpha.toFixed(3)})`);
}

function pairTooltip(query, key) {
  const lines = [
    `query ${query} ${shortToken(state.tokens[query])} \u2192 key ${key} ${shortToken(state.tokens[key])}`,
  ];
  for (const head of [...state.heads].sort((a, b) => a - b)) {
    lines.push(`head ${head}: ${weightAt(state.layer, head, query, key).toFixed(4)}`);
  }
  return lines.join("\n");
}

// The exact weights of the active query: its strongest keys for each shown head.
function drawWeightsList(query, heads) {
  if (query === null) {
    el.weightsTitle.textContent = "Weights";
    el.weightsList.replaceChildren(
      h(
        "div",
        { class: "inline-message" },
        "Hover a token in the head view's left column to see where it looks; click it to keep it. " +
          "Hover a right-hand token to see who looks at it.",
      ),
    );
    return;
  }
  el.weightsTitle.replaceChildren(
    `Weights of query ${query} `,
    h("span", { class: "hint" }, displayToken(state.tokens[query]) + (state.locked === query ? " (locked: click again)" : "")),
  );
  const perHead = Math.max(3, Math.min(8, Math.floor(24 / Math.max(1, heads.length))));
  const rows = [];
  for (const head of heads) {
    rows.push(
      h(
        "div",
        { class: "head" },
        h("span", { class: "chip", style: `width:10px;height:10px;border-radius:2px;background:${headColour(head)}` }),
        `L${state.layer} H${head}`,
      ),
    );
    const keys = range(0, query + 1)
      .map((k) => [k, weightAt(state.layer, head, query, k)])
      .sort((a, b) => b[1] - a[1])
      .slice(0, perHead);
    for (const [k, w] of keys) {
      rows.push(
        h(
          "div",
          {
            class: "row",
            "data-head": String(head),
            "data-key": String(k),
            title: `key ${k}: ${JSON.stringify(state.tokens[k])}`,
          },
          h("span", { class: "key" }, h("span", { class: "idx" }, `${k} `), shortToken(state.tokens[k], 10)),
          h("span", { class: "bar", style: `width:${Math.max(1, w * 100)}%;background:${headColour(head)}` }),
          h("span", { class: "value" }, w.toFixed(3)),
        ),
      );
    }
  }
  if (!heads.length) rows.push(h("div", { class: "inline-message" }, "No head selected: choose one above the tokens."));
  el.weightsList.replaceChildren(...rows);
}

// ---------------------------------------------------------------------------------------------------
// the role chart: the focused head's scores over training, and the second-copy loss

function drawChart() {
  const roles = state.roles;
  const layer = state.layer;
  const head = state.focusHead;
  const W = 300;
  const H = 176;
  const m = { left: 30, right: 34, top: 20, bottom: 20 };
  el.chart.replaceChildren();
  el.chartLegend.replaceChildren();
  el.chartTitle.replaceChildren(`Roles of L${layer} H${head}`, h("span", { class: "hint" }, "over training"));
  if (!roles) {
    el.chart.setAttribute("height", "0");
    const text = "No role scores in this run (trained with --log.no_head_roles?).";
    el.chartLegend.append(h("div", { class: "inline-message" }, text));
    return;
  }
  const steps = roles.steps;
  // one logged step (a prompt from sample.py --attention) has scores but no curve: the legend lists them
  el.chart.setAttribute("height", steps.length > 1 ? String(H) : "0");
  if (steps.length < 2) {
    const hint = h("span", { class: "hint" }, `at step ${formatStep(steps[0])}`);
    el.chartTitle.replaceChildren(`Roles of L${layer} H${head}`, hint);
  }
  const loss = (roles.second_copy_loss || []).filter(([, v]) => finite(v));
  const firstLoss = (roles.first_copy_loss || []).filter(([, v]) => finite(v));
  const allSteps = steps.concat(loss.map(([s]) => s));
  const x0 = Math.min(...allSteps);
  const x1 = Math.max(...allSteps, x0 + 1);
  const x = (step) => m.left + ((step - x0) / (x1 - x0)) * (W - m.left - m.right);
  const y = (v) => H - m.bottom - v * (H - m.top - m.bottom);
  const add = (tag, attrs, text) => {
    const node = svg(tag, attrs);
    if (text !== undefined) node.textContent = text;
    el.chart.append(node);
    return node;
  };
  add("text", { x: 2, y: 9 }, "score");
  for (const v of [0, 0.5, 1]) {
    add("line", { x1: m.left, x2: W - m.right, y1: y(v), y2: y(v), stroke: cssColour("--gridline") });
    add("text", { x: m.left - 4, y: y(v) + 3, "text-anchor": "end" }, v.toFixed(1));
  }
  for (const step of niceTicks(x0, x1, 4)) {
    add("line", { x1: x(step), x2: x(step), y1: H - m.bottom, y2: H - m.bottom + 3, stroke: cssColour("--faint") });
    add("text", { x: x(step), y: H - 5, "text-anchor": "middle" }, formatStep(step));
  }
  const marker = add("line", {
    x1: x(currentStep()), x2: x(currentStep()), y1: m.top, y2: H - m.bottom, stroke: "#f57c00", "stroke-width": 1.5,
  });
  marker.id = "chart-marker";
  const i = roles.index.get(currentStep());
  roles.roles.forEach((role, r) => {
    const style = ROLE_STYLE[role] || { colour: "#555", name: role };
    const points = steps
      .map((step, s) => [step, roles.scores[s][r][layer][head]])
      .filter(([, v]) => finite(v))
      .map(([step, v]) => `${x(step).toFixed(1)},${y(v).toFixed(1)}`);
    if (points.length) {
      const width = role === "induction" ? 2 : 1.3;
      add("polyline", { points: points.join(" "), fill: "none", stroke: style.colour, "stroke-width": width });
    }
    const value = i === undefined ? null : roles.scores[i][r][layer][head];
    const uniform = roles.uniform?.[role] ?? 0;
    el.chartLegend.append(
      h("span", {}, h("span", { class: "line-chip", style: `border-top-color:${style.colour}` }), style.name),
      h("span", { class: "v" }, `${finite(value) ? value.toFixed(3) : "\u2013"}  (uniform ${uniform.toFixed(2)})`),
    );
  });
  if (loss.length) {
    // the induction probe's losses on their own axis, right: the second copy's falls away from the
    // first copy's as the induction score rises
    const values = loss.concat(firstLoss).map(([, v]) => v);
    const lo = Math.min(...values);
    const hi = Math.max(...values, lo + 1e-6);
    const yl = (v) => y((v - lo) / (hi - lo));
    const lossLine = (series, dash, colour, name) => {
      add("polyline", {
        points: series.map(([s, v]) => `${x(s).toFixed(1)},${yl(v).toFixed(1)}`).join(" "),
        fill: "none", stroke: colour, "stroke-width": 1.3, "stroke-dasharray": dash,
      });
      const at = series.find(([s]) => s === currentStep());
      el.chartLegend.append(
        h("span", {}, h("span", { class: "line-chip dashed", style: `border-top-color:${colour}` }), name),
        h("span", { class: "v" }, at ? at[1].toFixed(3) : "\u2013"),
      );
    };
    if (firstLoss.length) lossLine(firstLoss, "1 3", cssColour("--faint"), "first-copy loss (right axis)");
    lossLine(loss, "4 3", cssColour("--fg"), "second-copy loss (right axis)");
    add("text", { x: W - 2, y: 9, "text-anchor": "end" }, "loss");
    add("text", { x: W - m.right + 4, y: yl(hi) + 3 }, hi.toFixed(2));
    add("text", { x: W - m.right + 4, y: yl(lo) + 3 }, lo.toFixed(2));
  }
  // a click on the chart jumps to the nearest logged step
  el.chart.onclick = (event) => {
    const box = el.chart.getBoundingClientRect();
    const step = x0 + ((event.clientX - box.left - m.left) / (W - m.left - m.right)) * (x1 - x0);
    const probeSteps = state.probe.steps;
    let best = 0;
    probeSteps.forEach((s, j) => {
      if (Math.abs(s - step) < Math.abs(probeSteps[best] - step)) best = j;
    });
    stopPlay();
    showStep(best);
  };
}

// About `count` round numbers (1, 2 or 5 times a power of ten apart) between lo and hi.
function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const spacing = Math.max(1, [1, 2, 5, 10].map((f) => f * power).find((d) => d >= raw)); // steps are whole
  const ticks = [];
  for (let t = Math.ceil(lo / spacing) * spacing; t <= hi; t += spacing) ticks.push(t);
  return ticks;
}

// ---------------------------------------------------------------------------------------------------
// tying it together

function drawAll() {
  updateHeadChips();
  drawGrid();
  drawHeadView();
  drawChart();
}


function showTooltip(event, text) {
  el.tooltip.textContent = text;
  el.tooltip.style.display = "block";
  const box = el.tooltip.getBoundingClientRect();
  const left = Math.min(event.clientX + 14, window.innerWidth - box.width - 4);
  const below = event.clientY + 16 + box.height <= window.innerHeight;
  const top = below ? event.clientY + 16 : event.clientY - box.height - 8;
  el.tooltip.style.left = `${Math.max(4, left)}px`;
  el.tooltip.style.top = `${Math.max(4, top)}px`;
}

function hideTooltip() {
  el.tooltip.style.display = "none";
}

function togglePlay() {
  if (state.playing) {
    stopPlay();
    return;
  }
  if (!state.probe) return;
  if (state.stepIndex >= state.probe.steps.length - 1) showStep(0); // from the start again
  el.play.textContent = "\u275a\u275a";
  state.playing = setInterval(() => {
    const next = Math.min(state.stepIndex + 1, state.probe.steps.length - 1);
    if (next === state.probe.steps.length - 1) stopPlay(); // the newest step ends the film
    showStep(next);
  }, PLAY_INTERVAL_MS);
}

function stopPlay() {
  if (state.playing) clearInterval(state.playing);
  state.playing = null;
  el.play.textContent = "\u25b6";
}

function onKey(event) {
  // the controls keep their own keys (a focused button takes space as a click)
  if (!state.probe || ["SELECT", "INPUT", "BUTTON"].includes(event.target.tagName)) return;
  if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
    const next = state.stepIndex + (event.key === "ArrowRight" ? 1 : -1);
    if (next >= 0 && next < state.probe.steps.length) {
      stopPlay();
      showStep(next);
    }
  } else if (event.key === " ") {
    event.preventDefault();
    togglePlay();
  } else if (event.key === "Escape") {
    state.locked = null;
    drawHeadView();
  }
}

export async function render() {
  buildPage(document.body);
  followDarkMode();
  await loadRuns(false);
  // a run still training gains steps: look again now and then while the tab is visible
  setInterval(() => {
    if (document.visibilityState === "visible" && !state.playing) loadRuns(true);
  }, REFRESH_INTERVAL_MS);
}
