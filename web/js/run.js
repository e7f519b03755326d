// The run page: live curves over SSE, the control panel and the command history.

import { api, num, records, seriesUrl, stepParams, stream, withToken } from "./api.js";
import { Chart } from "./charts.js";
import { toolbar } from "./controls.js";
import { Firings, marker } from "./firings.js";
import { RunEdits } from "./runedit.js";
import { Steering } from "./steer.js";
import { el, fmtDate, fmtDuration, fmtValue, runSeconds, showError, statusBadge } from "./util.js";

const runId = decodeURIComponent(location.pathname.split("/")[2]);
const settings = { smoothing: 0, logy: false, xmode: "step", stepsPerEpoch: null };
const charts = new Map(); // chart key -> Chart
const seriesChart = new Map(); // "scope/name" -> chart key
const steering = new Steering(runId, (markers) => {
  for (const chart of charts.values()) {
    if ([...chart.series.values()].some((s) => s.scope === "batch")) chart.setMarkers(markers);
  }
});
// Each firing is marked on the chart of the series its rule watches.
const firings = new Firings(
  (list) => {
    const byChart = new Map([...charts.keys()].map((key) => [key, []]));
    for (const f of list) byChart.get(seriesChart.get(`${f.scope}/${f.name}`))?.push(marker(f));
    for (const [key, markers] of byChart) charts.get(key).setMarkers(markers, "rules");
  },
  (id) => steering.numbers.get(id),
);
const edits = new RunEdits(runId, (saved) => {
  run = saved;
  renderHeader();
});
const evaluations = new Map(); // "step/wall time" -> eval record, in the order logged (seqs pass 2**53)
const latest = new Map(); // "batch/name" or "epoch/name" -> [step, value] of its newest point
const reach = new Map(); // "batch" or "epoch" -> {step, wall} of the newest point: the lr line goes on to it
let run = null;

const $ = (id) => document.getElementById(id);
const SECTIONS = { batch: "batch-charts", epoch: "epoch-charts", system: "system-charts" };
// System series, process then machine; each GPU quantity is one chart with a line per GPU.
const SYSTEM_ORDER = ["cpu_percent", "rss_mb", "memory_used_mb", "memory_percent"];
const GPU = /^gpu(\d+)_(.+)$/;

// A model's learning rate, `lr`, or one of its several optimizers' rates, `lr.NAME`.
const isLr = (name) => name === "lr" || name.startsWith("lr.");

function chartKeyOf(scope, name) {
  if (scope === "system") {
    const gpu = name.match(GPU);
    return gpu ? `system/gpu_${gpu[2]}` : `system/${name}`;
  }
  if (isLr(name)) return "lr";
  if (scope === "epoch") return `epoch/${name.replace(/^val_/, "")}`;
  return `${scope}/${name}`;
}

function chartTitle(key) {
  if (key === "lr") return "learning rate";
  const [scope, ...rest] = key.split("/");
  const name = rest.join("/");
  if (scope === "epoch") return `${name} (epoch: train and validation)`;
  if (scope === "system" && name.startsWith("gpu_")) return `${name} (system: per GPU)`;
  return `${name} (${scope})`;
}

function seriesLabel(key, scope, name) {
  if (key === "lr") return name === "lr" ? `lr (${scope})` : `${name.slice(3)} (${scope})`;
  if (scope === "epoch") return name.startsWith("val_") ? "validation" : "train";
  const gpu = scope === "system" && name.match(GPU);
  return gpu ? `gpu${gpu[1]}` : name;
}

// gpu2 before gpu10; other names as before.
const byName = (a, b) => a.name.localeCompare(b.name, undefined, { numeric: a.scope === "system" });

/** The order charts are made in: batch, epoch, system; lr last of its scope. */
function seriesOrder(s) {
  if (s.scope === "system") {
    const known = SYSTEM_ORDER.indexOf(s.name);
    return 3000 + (known >= 0 ? known : GPU.test(s.name) ? 100 : 200);
  }
  return ({ batch: 0, epoch: 1, eval: 2 }[s.scope] ?? 4) * 1000 + (isLr(s.name) ? 999 : 0);
}

function ensureChart(scope, name) {
  const id = `${scope}/${name}`;
  if (scope === "eval") return null; // evaluations are values, shown in their table
  if (seriesChart.has(id)) return charts.get(seriesChart.get(id));
  // The lr chart shows the batch-scope lr (every change) when there is one.
  if (isLr(name) && scope === "epoch" && seriesChart.has(`batch/${name}`)) return null;
  const key = chartKeyOf(scope, name);
  let chart = charts.get(key);
  if (!chart) {
    const section = $(key === "lr" ? "lr-charts" : SECTIONS[scope] || "batch-charts");
    section.closest("section").hidden = false;
    chart = new Chart(section, {
      title: chartTitle(key),
      settings,
      onZoom: (range) => zoom(chart, range).catch(showError),
      // Samples have no step: by wall time they line up with the training.
      xmode: scope === "system" ? "wall" : null,
      reach: key === "lr" ? reach : null,
    });
    charts.set(key, chart);
  }
  chart.add(id, seriesLabel(key, scope, name), scope);
  seriesChart.set(id, key);
  return chart;
}

async function load(chart, id, params = {}) {
  const [scope, ...rest] = id.split("/");
  const body = await api(seriesUrl(runId, scope, rest.join("/"), params));
  chart.setData(id, body);
}

async function zoom(chart, range) {
  const bucket = Math.max(200, Math.round(chart.plot.clientWidth || 800) * 2);
  await Promise.all(
    [...chart.series.values()].map((s) => load(chart, s.key, { ...stepParams(range, s), max_points: String(bucket) })),
  );
  chart.render();
}

function renderHeader() {
  document.title = `${run.name} · fitwatch`;
  $("run-name").textContent = run.name;
  $("run-status").replaceChildren(statusBadge(run.status));
  $("run-meta").replaceChildren(
    el("span", { text: `project ${run.project}` }),
    el("span", { text: `started ${fmtDate(run.created_at)}` }),
    el("span", { id: "run-duration", text: `duration ${fmtDuration(runSeconds(run))}` }),
    el("span", { text: `id ${run.id}` }),
  );
  $("run-reason").textContent = run.reason || "";
  $("run-reason").hidden = !run.reason;
  steering.update(run);
  renderLr();
  edits.show(run);
  renderContext(run.config?.context);
  const config = $("config");
  config.textContent = JSON.stringify(run.config, null, 2);
  settings.stepsPerEpoch = run.config?.fit?.steps || null;
}

const textOf = (value) => (typeof value === "string" && value ? value : null);

/** Where the run ran, from its config's `context`: the host, and the git commit (short,
 * marked when the tree had uncommitted changes) with its branch. Any key may be missing. */
function renderContext(context) {
  const parts = [];
  if (context && typeof context === "object") {
    const host = textOf(context.host);
    const python = textOf(context.python) && `Python ${context.python}`;
    const about = [textOf(context.os), python].filter(Boolean).join(" · ");
    if (host) parts.push(el("span", { id: "run-host", title: about || null, text: `host ${host}` }));
    const git = context.git && typeof context.git === "object" ? context.git : {};
    const commit = textOf(git.commit);
    const branch = textOf(git.branch);
    if (commit || branch) {
      const dirty = git.dirty === true;
      parts.push(
        el(
          "span",
          { id: "run-git", title: commit ? `commit ${commit}${dirty ? " with uncommitted changes" : ""}` : null },
          "git ",
          commit ? el("code", { className: "commit", text: commit.slice(0, 7) }) : null,
          dirty ? el("span", { className: "dirty", title: "uncommitted changes", text: "*" }) : null,
          branch ? `${commit ? " on " : ""}${branch}` : null,
        ),
      );
    }
  }
  $("run-context").replaceChildren(...parts);
  $("run-context").hidden = parts.length === 0;
}

function currentLr() {
  const chart = charts.get("lr");
  if (!chart) return null;
  let best = null;
  for (const s of chart.series.values()) {
    const i = s.steps.length - 1;
    if (i >= 0 && (best === null || s.scope === "batch")) best = s.values[i];
  }
  return best;
}

function renderLr() {
  steering.showChartRate(currentLr());
}

const evalKey = (r) => `${r.step}/${r.wall_time}`;

function renderEvaluations() {
  $("evaluations").hidden = evaluations.size === 0;
  const rows = [...evaluations.values()];
  const names = [...new Set(rows.flatMap((r) => Object.keys(r.metrics)))];
  names.sort((a, b) => (a !== "loss") - (b !== "loss") || a.localeCompare(b));
  $("eval-head").replaceChildren(el("tr", {}, ...["step", "epoch", "time", ...names].map((n) => el("th", { text: n }))));
  $("eval-rows").replaceChildren(
    ...rows.map((r) =>
      el(
        "tr",
        {},
        el("td", { text: String(r.step) }),
        el("td", { text: r.epoch === null || r.epoch === undefined ? "" : String(r.epoch) }),
        el("td", { text: fmtDate(new Date(r.wall_time * 1000).toISOString()) }),
        ...names.map((n) => el("td", { className: "num", text: n in r.metrics ? fmtValue(num(r.metrics[n])) : "" })),
      ),
    ),
  );
}

function noteLatest(scope, name, step, value) {
  const id = `${scope}/${name}`;
  if ((scope === "batch" || scope === "epoch") && !(latest.get(id)?.[0] > step)) latest.set(id, [step, value]);
}

/** The newest point of a batch or epoch series, with its time; whether it is newer than the reach. */
function noteReach(scope, step, wall) {
  const further = (scope === "batch" || scope === "epoch") && !(reach.get(scope)?.step >= step);
  if (further) reach.set(scope, { step, wall });
  return further;
}

/** The newest value of each batch and epoch series, as text: what a chart shows only on
 * hover, which a phone hardly has. Kept apart from the charts, which may hold a zoom. */
function renderLatest() {
  const lines = [["batch", "step"], ["epoch", "epoch"]].flatMap(([scope, at]) => {
    const here = [...latest].filter(([id]) => id.startsWith(`${scope}/`));
    if (!here.length) return [];
    const step = Math.max(...here.map(([, [s]]) => s));
    const values = here.map(([id, [, value]]) => `${id.slice(scope.length + 1)} ${fmtValue(value)}`);
    return [el("span", { text: `${at} ${step}: ${values.join(" · ")}` })];
  });
  $("run-latest").replaceChildren(...lines);
  $("run-latest").hidden = lines.length === 0;
}

/** Live records into the charts and the evaluation table; `replay` skips points the
 * first read already had. */
function onMetrics({ records }, replay = false) {
  const grouped = new Map();
  let evaluated = false;
  let further = false;
  for (const r of records) {
    further = noteReach(r.scope, r.step, r.wall_time) || further;
    if (r.scope === "eval") {
      evaluations.set(evalKey(r), r);
      evaluated = true;
      continue;
    }
    for (const [name, value] of Object.entries(r.metrics)) {
      noteLatest(r.scope, name, r.step, value);
      const chart = ensureChart(r.scope, name);
      if (!chart) continue;
      const id = `${r.scope}/${name}`;
      if (!grouped.has(id)) grouped.set(id, { chart, points: [] });
      grouped.get(id).points.push([r.step, value, r.wall_time]);
    }
  }
  for (const [id, { chart, points }] of grouped) {
    points.sort((a, b) => a[0] - b[0]);
    const last = chart.series.get(id)?.steps.at(-1);
    chart.extend(id, replay && last !== undefined ? points.filter((p) => p[0] > last) : points);
  }
  if (further) charts.get("lr")?.scheduleRender();
  if (grouped.has("batch/lr") || grouped.has("epoch/lr")) renderLr();
  if (evaluated) renderEvaluations();
  if (grouped.size) renderLatest();
}

// Live points wait here while the stored ones are read (null: drawn as they come), so that
// no point logged in between is missed.
let held = [];

/** Read the run, its series, commands and firings from the API and draw them, then the
 * points that came live meanwhile: at the start, and when the stream says to resync. */
async function readAll(base) {
  held = held || [];
  let seriesList;
  [run, seriesList] = await Promise.all([api(base), api(`${base}/series`)]);
  const [commands, fired] = await Promise.all([api(`${base}/commands`), api(`${base}/firings`)]);
  for (const c of commands) steering.remember(c);
  for (const f of fired) firings.remember(f);
  renderHeader();
  seriesList.sort((a, b) => seriesOrder(a) - seriesOrder(b) || byName(a, b));
  for (const s of seriesList) {
    ensureChart(s.scope, s.name);
    noteLatest(s.scope, s.name, s.last_step, s.last_value);
  }
  const evaluated = seriesList.some((s) => s.scope === "eval") ? records(runId, "eval") : [];
  await Promise.all([...seriesChart].map(([id, key]) => load(charts.get(key), id)));
  for (const chart of charts.values()) {
    for (const s of chart.series.values()) if (s.steps.length) noteReach(s.scope, s.steps.at(-1), s.walls.at(-1));
  }
  for (const r of await evaluated) evaluations.set(evalKey(r), r);
  for (const data of held || []) onMetrics(data, true);
  held = null;
  $("empty").hidden = charts.size > 0 || evaluations.size > 0;
  charts.forEach((c) => c.render());
  steering.render();
  firings.render();
  renderLr();
  renderEvaluations();
  renderLatest();
}

async function main() {
  toolbar($("toolbar"), settings, () => charts.forEach((c) => c.render()));
  const base = `/api/v1/runs/${encodeURIComponent(runId)}`;
  // Reads one after another: the first once the stream is open (it opens with a `run`
  // event), then one per resync; a read again that fails is tried again, holding live
  // points meanwhile.
  const readAgain = () =>
    readAll(base).catch((error) => {
      showError(error);
      return new Promise((resolve) => setTimeout(resolve, 2000)).then(readAgain);
    });
  let reading = stream({ runs: [runId] }, {
    run: (data) => {
      if (run) {
        run = data;
        renderHeader();
      }
    },
    metrics: (data) => {
      if (held) held.push(data);
      else onMetrics(data);
    },
    command: (c) => {
      steering.remember(c);
      steering.render();
      if (!held) firings.render(); // it names commands by their number in the run
    },
    rule: (f) => {
      firings.remember(f);
      if (!held) firings.render(); // else drawn with the read under way
    },
    resync: () => {
      // Some events are lost to this page: read everything again, after any read under way.
      if (!held) held = [];
      reading = reading.then(readAgain, readAgain);
    },
    deleted: () => showError("This run was deleted."),
  }).then(() => readAll(base));
  await reading;
  const report = `/runs/${encodeURIComponent(runId)}/report.html`;
  $("report").href = withToken(report);
  $("report-download").href = withToken(`${report}?download=1`);
  document.body.dataset.ready = "true";
  setInterval(() => {
    const span = $("run-duration");
    if (span && run) span.textContent = `duration ${fmtDuration(runSeconds(run))}`;
  }, 1000);
}

main().catch(showError);
