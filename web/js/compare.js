// Compare: one metric of several runs on one chart, live, with the same controls, a
// table of the config and context keys whose values differ between the runs, and for a
// sweep its keys against the metric. The runs are named (`?runs=a,b`) or are those that
// pass the run list's filters (`?project=&status=&q=&tag=`), a thousand at most; they are
// read a hundred a request, so a hundred runs cost a few requests, not three a run.

import { api, apiPage, stepParams, stream } from "./api.js";
import { Chart, colorAt } from "./charts.js";
import { toolbar } from "./controls.js";
import { renderDifferences } from "./differences.js";
import { fleetControls, LIVE } from "./steer.js";
import { Sweeps } from "./sweeps.js";
import { el, parts, showError, statusBadge } from "./util.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
// The runs in colour order: named, or filled by `chooseRuns` from the filters.
const ids = (query.get("runs") || "").split(",").filter(Boolean);
const FILTERS = ["project", "status", "q", "tag"]; // as GET /api/v1/runs takes them
const MAX_RUNS = 1000; // runs of a filter compared
const PART = 100; // runs a request of runs or of the series they have
const SERIES_PART = 20; // runs a request of points: several in flight over the connections
const POINTS = 40_000; // points a chart reads, all runs together (2,000 a run at most)
const FEW_RUNS = 8; // runs the legend lists without a filter box and a scroll
const settings = { smoothing: 0, logy: false, xmode: "step", stepsPerEpoch: null };
let chart = null;
let metric = null; // "scope/name"
const runs = new Map();
const has = new Map(); // id -> the "scope/name" of each series the run has points of
let held = []; // live events that arrive while the runs are read (null: drawn as they come)
let picked = null; // the runs picked in the sweep view (null: all)
const sweeps = new Sweeps((chosen) => {
  picked = chosen;
  chart?.only(chosen);
  markPicked();
});

/** With no runs named, the runs that pass the filters of the address, newest first. */
async function chooseRuns() {
  if (ids.length) return;
  const filters = new URLSearchParams();
  for (const key of FILTERS) for (const value of query.getAll(key)) if (value) filters.append(key, value);
  if (![...filters.keys()].length) return;
  filters.set("limit", String(MAX_RUNS));
  const { items, total } = await apiPage(`/api/v1/runs?${filters}`);
  ids.push(...items.map((run) => run.id));
  filters.delete("limit");
  const said = [...filters].map(([key, value]) => (key === "q" ? `“${value}”` : `${key} ${value}`));
  $("title").textContent = `Compare ${total.toLocaleString()} ${total === 1 ? "run" : "runs"}: ${new Intl.ListFormat("en").format(said)}`;
  $("cut").textContent = `The ${MAX_RUNS.toLocaleString()} newest of ${total.toLocaleString()} matching runs are compared; narrow the filters for the rest.`;
  $("cut").hidden = total <= ids.length;
}

/** A metric's scope and name (a name may hold slashes). */
function split(key) {
  const [scope, ...rest] = key.split("/");
  return [scope, rest.join("/")];
}

async function draw() {
  held = held || []; // points that come while the runs are read wait for the read
  $("charts").replaceChildren();
  const [scope, name] = split(metric);
  fitAxisChoice(scope);
  $("running-means").hidden = scope !== "batch";
  chart = new Chart($("charts"), { title: `${name} (${scope})`, settings, onZoom: (range) => load(range).then(() => chart.render()).catch(showError) });
  chart.shown = picked;
  ids.forEach((id, i) => {
    // By epoch, each run's batches are scaled by its own steps per epoch.
    chart.add(id, runs.get(id).name, scope, colorAt(i)).stepsPerEpoch = runs.get(id).config?.fit?.steps || null;
  });
  await load(null);
  chart.render();
  renderMissing();
  renderFinals();
  for (const [id, data] of held) onMetrics(id, data);
  held = null;
}

/** The x-axis choice in the words of the chart's axis: an epoch series' steps are its
 * epochs, system samples are counted; the choice made for batches holds for them. */
function fitAxisChoice(scope) {
  const select = $("xmode");
  const [step, epoch] = select.options;
  const byEpoch = scope === "epoch" || scope === "eval";
  step.textContent = scope === "system" ? "sample" : "step";
  step.hidden = byEpoch;
  epoch.hidden = scope === "system";
  if (settings.xmode !== "wall") select.value = byEpoch ? "epoch" : scope === "system" ? "step" : settings.xmode;
}

/** Name the runs with no points of the metric: the chart has no line for them. */
function renderMissing() {
  const [scope, name] = split(metric);
  const lacking = ids.filter((id) => !has.get(id).has(metric)).map((id) => runs.get(id).name);
  const verb = lacking.length === 1 ? "has" : "have";
  $("missing").textContent = `${new Intl.ListFormat("en").format(lacking)} ${verb} no ${name} (${scope}) points yet.`;
  $("missing").hidden = lacking.length === 0;
}

/** The series each run has, for the metric choice and to know which runs lack one;
 * answers the "scope/name" of every series any of the runs has. */
async function readSeries() {
  const lists = await Promise.all(parts(ids, PART).map((part) => api(`/api/v1/series?runs=${part.map(encodeURIComponent).join(",")}`)));
  for (const id of ids) has.set(id, new Set());
  for (const s of lists.flat()) for (const id of s.runs) has.get(id).add(`${s.scope}/${s.name}`);
  return [...new Set(lists.flat().map((s) => `${s.scope}/${s.name}`))];
}

/** Each run as it is now, config included, into the legend and the table of differences. */
async function readRuns() {
  const read = await Promise.all(parts(ids, PART).map((part) => api(`/api/v1/runs?${part.map((id) => `id=${encodeURIComponent(id)}`).join("&")}&config=true&limit=${PART}`)));
  for (const run of read.flat()) runs.set(run.id, run);
  const gone = ids.filter((id) => !runs.has(id));
  if (gone.length) throw new Error(`No run ${new Intl.ListFormat("en").format(gone)}.`);
  renderLegend();
  if (chart) renderFinals();
}

/** The metric's last value of each run, drawn: into the table of differences and the sweep. */
function renderFinals() {
  const finals = new Map();
  for (const [id, s] of chart.series) {
    const last = s.values.findLast((v) => Number.isFinite(v));
    if (last !== undefined) finals.set(id, last);
  }
  const [scope, name] = split(metric);
  renderDifferences(ids, runs, finals, name);
  sweeps.update(ids, runs, finals, `${name} (${scope})`);
}

let redrawing = null;
/** Read again once resyncs pause: a restart resyncs every run's stream at once. */
function redrawSoon() {
  clearTimeout(redrawing);
  redrawing = setTimeout(() => metric && Promise.all([readRuns(), readSeries().then(draw)]).catch(showError), 300);
}

/** The metric's points of each run that has it, read a part of the runs a request; a
 * zoom asks each run for its own steps, so runs zoomed alike share a request. */
async function load(range) {
  const [scope, name] = split(metric);
  const having = ids.filter((id) => has.get(id).has(metric));
  const maxPoints = Math.max(200, Math.min(2000, Math.floor(POINTS / Math.max(1, having.length))));
  const alike = new Map(); // query -> runs
  for (const id of having) {
    const params = `${new URLSearchParams({ max_points: String(maxPoints), ...stepParams(range, chart.series.get(id)) })}`;
    alike.set(params, [...(alike.get(params) || []), id]);
  }
  const path = `/api/v1/series/${scope}/${encodeURIComponent(name)}`;
  const reads = [...alike].flatMap(([params, runIds]) => parts(runIds, SERIES_PART).map((part) => [params, part]));
  await Promise.all(
    reads.map(async ([params, part]) => {
      const body = await api(`${path}?runs=${part.map(encodeURIComponent).join(",")}&${params}`);
      for (const s of body.series) chart.setData(s.run_id, s);
    }),
  );
}

/** Each run's colour, name and status (live); with many runs the list scrolls and a box
 * finds a run in it. Hovering a run highlights its line. */
function renderLegend() {
  const many = ids.length > FEW_RUNS;
  $("legend").classList.toggle("many", many);
  $("legend-filter").hidden = !many;
  $("legend").replaceChildren(...ids.map((id, i) => {
    const run = runs.get(id);
    const swatch = el("span", { className: "swatch", style: `background:${colorAt(i)}` });
    const item = el("li", { "data-id": id }, swatch, el("a", { href: `/runs/${encodeURIComponent(id)}`, text: run.name }), " ", statusBadge(run.status));
    item.addEventListener("mouseenter", () => highlight(id));
    item.addEventListener("mouseleave", () => highlight(null));
    return item;
  }));
  filterLegend();
  markPicked();
}

function highlight(id) {
  chart?.highlight(id);
  for (const item of $("legend").children) item.toggleAttribute("data-highlighted", item.dataset.id === id);
}

function filterLegend() {
  const text = $("legend-filter").value.trim().toLowerCase();
  for (const item of $("legend").children) {
    const run = runs.get(item.dataset.id);
    item.hidden = text !== "" && !`${run.name} ${run.id}`.toLowerCase().includes(text);
  }
}

/** Grey out in the legend the runs the sweep view left out of the chart. */
function markPicked() {
  for (const item of $("legend").children) item.classList.toggle("muted", picked !== null && !picked.has(item.dataset.id));
}

async function main() {
  await chooseRuns();
  if (ids.length === 0) throw new Error(query.has("runs") || !FILTERS.some((key) => query.has(key)) ? "Choose runs to compare on the run list." : "No runs match these filters.");
  // One stream for every run: a browser holds six connections to a server.
  await stream({ runs: ids }, {
    run: (run) => {
      if (!runs.has(run.id)) return; // the first read has it
      runs.set(run.id, run);
      if (ids.every((other) => runs.has(other))) renderLegend(); // else drawn once every run is read
    },
    metrics: (data) => (held ? held.push([data.run_id, data]) : onMetrics(data.run_id, data)),
    resync: redrawSoon, // some points are lost to this page: read again
  });
  const [found] = await Promise.all([readSeries(), readRuns()]);
  $("legend-filter").addEventListener("input", filterLegend);
  fleetControls($("fleet"), () => ids)([...runs.values()].some((run) => LIVE.includes(run.status)));
  const metrics = found.sort((a, b) => (a.startsWith("epoch/") ? -1 : 0) - (b.startsWith("epoch/") ? -1 : 0) || a.localeCompare(b));
  const select = $("metric");
  select.replaceChildren(...metrics.map((m) => el("option", { value: m, text: m })));
  metric = metrics.includes("epoch/loss") ? "epoch/loss" : metrics[0];
  if (!metric) throw new Error("These runs have no points yet.");
  select.value = metric;
  select.addEventListener("change", () => {
    metric = select.value;
    draw().catch(showError);
  });
  toolbar($("toolbar"), settings, () => chart && chart.render());
  await draw();
  document.body.dataset.ready = "true";
}

function onMetrics(id, { records }) {
  const lacked = !has.get(id).has(metric);
  for (const r of records) for (const n of Object.keys(r.metrics)) has.get(id).add(`${r.scope}/${n}`);
  if (lacked && has.get(id).has(metric)) renderMissing();
  const [scope, name] = split(metric);
  const last = chart.series.get(id)?.steps.at(-1) ?? -1;
  const points = records.filter((r) => r.scope === scope && name in r.metrics && r.step > last).map((r) => [r.step, r.metrics[name], r.wall_time]);
  if (points.length) chart.extend(id, points);
}

main().catch(showError);
