// Compare: one metric of several runs on one chart, live, with the same controls, and a
// table of the config and context keys whose values differ between the runs.

import { api, seriesUrl, stepParams, stream } from "./api.js";
import { Chart, colorAt } from "./charts.js";
import { toolbar } from "./controls.js";
import { fleetControls, LIVE } from "./steer.js";
import { el, showError, statusBadge } from "./util.js";

const $ = (id) => document.getElementById(id);
const ids = (new URLSearchParams(location.search).get("runs") || "").split(",").filter(Boolean);
const settings = { smoothing: 0, logy: false, xmode: "step", stepsPerEpoch: null };
let chart = null;
let metric = null; // "scope/name"
const runs = new Map();
const has = new Map(); // id -> the "scope/name" of each series the run has points of

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
  ids.forEach((id, i) => {
    // By epoch, each run's batches are scaled by its own steps per epoch.
    chart.add(id, runs.get(id).name, scope, colorAt(i)).stepsPerEpoch = runs.get(id).config?.fit?.steps || null;
  });
  await load(null);
  chart.render();
  renderMissing();
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

/** The series each run has, for the metric choice and to know which runs lack one. */
async function readSeries() {
  const lists = await Promise.all(ids.map((id) => api(`/api/v1/runs/${encodeURIComponent(id)}/series`)));
  ids.forEach((id, i) => has.set(id, new Set(lists[i].map((s) => `${s.scope}/${s.name}`))));
  return lists;
}

/** Each run as it is now, into the legend and the table of differences. */
async function readRuns() {
  const read = await Promise.all(ids.map((id) => api(`/api/v1/runs/${encodeURIComponent(id)}`)));
  ids.forEach((id, i) => runs.set(id, read[i]));
  renderLegend();
  renderDifferences();
}

let redrawing = null;
/** Read again once resyncs pause: a restart resyncs every run's stream at once. */
function redrawSoon() {
  clearTimeout(redrawing);
  redrawing = setTimeout(() => metric && Promise.all([readRuns(), readSeries().then(draw)]).catch(showError), 300);
}

async function load(range) {
  const [scope, name] = split(metric);
  await Promise.all(
    ids.filter((id) => has.get(id).has(metric)).map(async (id) => {
      chart.setData(id, await api(seriesUrl(id, scope, name, stepParams(range, chart.series.get(id)))));
    }),
  );
}

/** A config as dotted keys to JSON texts: nested objects are walked, lists and other
 * values kept whole (an empty object is a value too). */
function flatten(value, prefix = "", out = new Map()) {
  const nested = value !== null && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length > 0;
  if (nested) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, out);
  } else if (prefix) {
    out.set(prefix, JSON.stringify(value));
  }
  return out;
}

const isContext = (key) => key === "context" || key.startsWith("context.");
// Hyperparameters first, then where the run ran; by name within each.
const keyOrder = (a, b) => isContext(a) - isContext(b) || a.localeCompare(b);

/** A JSON text as a cell: strings as themselves, anything else as JSON; missing as a dash. */
function valueCell(json) {
  if (json === undefined) return el("td", { className: "missing", title: "not in this run's config", text: "–" });
  const value = JSON.parse(json);
  return el("td", {}, el("code", { text: typeof value === "string" ? value : json }));
}

function renderDifferences() {
  if (ids.length < 2) return;
  const flat = ids.map((id) => flatten(runs.get(id).config));
  const keys = [...new Set(flat.flatMap((m) => [...m.keys()]))].sort(keyOrder);
  const differ = keys.filter((key) => new Set(flat.map((m) => m.get(key))).size > 1);
  const equal = keys.filter((key) => !differ.includes(key)); // a config has tens of keys
  $("diff-head").replaceChildren(
    el("tr", {}, el("th", { text: "key" }), ...ids.map((id, i) =>
      el("th", { title: id }, el("span", { className: "swatch", style: `background:${colorAt(i)}` }), " ", runs.get(id).name),
    )),
  );
  $("diff-rows").replaceChildren(
    ...differ.map((key) => el("tr", { "data-key": key }, el("th", {}, el("code", { text: key })), ...flat.map((m) => valueCell(m.get(key))))),
  );
  $("diff-rows").closest("table").hidden = differ.length === 0;
  $("no-differences").hidden = differ.length > 0;
  $("equal-rows").replaceChildren(
    ...equal.map((key) => el("tr", { "data-key": key }, el("th", {}, el("code", { text: key })), valueCell(flat[0].get(key)))),
  );
  $("equal-count").textContent = `${equal.length} equal ${equal.length === 1 ? "key" : "keys"}`;
  $("equal-keys").hidden = equal.length === 0;
  $("differences").hidden = false;
}

let held = []; // live events that arrive while the runs are read (null: drawn as they come)

/** Each run's colour, name and status (live). */
function renderLegend() {
  $("legend").replaceChildren(...ids.map((id, i) => {
    const run = runs.get(id);
    const swatch = el("span", { className: "swatch", style: `background:${colorAt(i)}` });
    return el("li", { "data-id": id }, swatch, el("a", { href: `/runs/${encodeURIComponent(id)}`, text: run.name }), " ", statusBadge(run.status));
  }));
}

async function main() {
  if (ids.length === 0) throw new Error("Choose runs to compare on the run list.");
  for (const id of ids) {
    stream(`/api/v1/runs/${encodeURIComponent(id)}/events`, {
      run: (run) => {
        if (!runs.has(id)) return; // the first read has it
        runs.set(id, run);
        if (ids.every((other) => runs.has(other))) renderLegend(); // else drawn once every run is read
      },
      metrics: (data) => (held ? held.push([id, data]) : onMetrics(id, data)),
      resync: redrawSoon, // some points are lost to this page: read again
    });
  }
  const [lists] = await Promise.all([readSeries(), readRuns()]);
  fleetControls($("fleet"), () => ids)([...runs.values()].some((run) => LIVE.includes(run.status)));
  const metrics = [...new Set(lists.flat().map((s) => `${s.scope}/${s.name}`))].sort((a, b) => (a.startsWith("epoch/") ? -1 : 0) - (b.startsWith("epoch/") ? -1 : 0) || a.localeCompare(b));
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
