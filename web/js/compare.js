// Compare: one metric of several runs on one chart, live, with the same controls.

import { api, seriesUrl, stream } from "./api.js";
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

async function draw() {
  $("charts").replaceChildren();
  const [scope, ...rest] = metric.split("/");
  const name = rest.join("/");
  chart = new Chart($("charts"), { title: `${name} (${scope})`, settings, onZoom: (since, until) => load(since, until).then(() => chart.render()) });
  ids.forEach((id, i) => chart.add(id, runs.get(id).name, scope, colorAt(i)));
  await load(null, null);
  chart.render();
}

async function load(since, until) {
  const [scope, ...rest] = metric.split("/");
  const params = since === null ? {} : { since_step: String(since), until_step: String(until) };
  await Promise.all(
    ids.map(async (id) => {
      try {
        chart.setData(id, await api(seriesUrl(id, scope, rest.join("/"), params)));
      } catch (error) {
        if (error.status !== 404) throw error; // this run has no such series
      }
    }),
  );
}

let held = []; // live events that arrive before the first draw

async function main() {
  if (ids.length === 0) throw new Error("Choose runs to compare on the run list.");
  for (const id of ids) {
    stream(`/api/v1/runs/${encodeURIComponent(id)}/events`, {
      metrics: (data) => (held ? held.push([id, data]) : onMetrics(id, data)),
    }, (live) => ($("live").hidden = !live));
  }
  const lists = await Promise.all(ids.map(async (id) => {
    const base = `/api/v1/runs/${encodeURIComponent(id)}`;
    const [run, series] = await Promise.all([api(base), api(`${base}/series`)]);
    runs.set(id, run);
    return series;
  }));
  $("legend").replaceChildren(...ids.map((id, i) => {
    const run = runs.get(id);
    return el("li", {}, el("span", { className: "swatch", style: `background:${colorAt(i)}` }), el("a", { href: `/runs/${encodeURIComponent(id)}`, text: run.name }), " ", statusBadge(run.status));
  }));
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
  toolbar($("toolbar"), settings, () => chart && chart.render(), { epochAxis: false });
  await draw();
  for (const [id, data] of held) onMetrics(id, data);
  held = null;
  document.body.dataset.ready = "true";
}

function onMetrics(id, { records }) {
  const [scope, ...rest] = metric.split("/");
  const name = rest.join("/");
  const last = chart.series.get(id)?.steps.at(-1) ?? -1;
  const points = records.filter((r) => r.scope === scope && name in r.metrics && r.step > last).map((r) => [r.step, r.metrics[name], r.wall_time]);
  if (points.length) chart.extend(id, points);
}

main().catch(showError);
