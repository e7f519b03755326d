// Sweeps at a glance: the config keys that differ between the compared runs against the
// chosen metric's final value, as parallel coordinates and as a scatter of one key.
// Brushing an axis or selecting points picks runs; the page's chart then draws those.

import { colorAt } from "./charts.js";
import { differing, flatten, isContext } from "./differences.js";
import { el } from "./util.js";

const MAX_AXES = 12; // keys drawn as axes, besides the metric
const MISSING = "–"; // a key a run's config lacks

const $ = (id) => document.getElementById(id);

/** A key's values over the runs as an axis: numbers as they are, anything else as
 * categories (ticks named, in order). */
function axis(label, jsons) {
  const values = jsons.map((json) => (json === undefined ? undefined : JSON.parse(json)));
  if (values.every((v) => typeof v === "number")) return { label, values };
  const text = (v) => (v === undefined ? MISSING : typeof v === "string" ? v : JSON.stringify(v));
  const names = [...new Set(values.map(text))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  return { label, values: values.map((v) => names.indexOf(text(v))), tickvals: names.map((_, i) => i), ticktext: names, range: [0, Math.max(1, names.length - 1)] };
}

/** Whether `value` lies in a parcoords constraint: one [lo, hi] or a list of them. */
function within(value, range) {
  const ranges = Array.isArray(range[0]) ? range : [range];
  return ranges.some(([lo, hi]) => value >= lo && value <= hi);
}

export class Sweeps {
  /** @param {(ids: Set<string> | null) => void} onPick the runs picked (null: all) */
  constructor(onPick) {
    this.onPick = onPick;
    this.ids = [];
    this.picked = null;
    this.drawn = false;
    this.stale = false; // drawn data older than the last update
    this.inView = false;
    // Parallel coordinates take WebGL and seconds on a machine without a GPU: drawn once
    // the section is near the screen, never in the way of the chart above it.
    new IntersectionObserver((entries) => {
      this.inView = entries.some((entry) => entry.isIntersecting);
      if (this.inView && this.stale) this.paint();
    }, { rootMargin: "200px" }).observe($("sweeps"));
    $("sweep-all").addEventListener("click", () => this.pick(null, true));
    $("sweep-key").addEventListener("change", () => this.drawScatter());
  }

  /** Draw for runs `ids` (in colour order) with configs in `runs` and the metric's final
   * values in `finals`; hidden where fewer than 3 runs have one or no key differs. */
  update(ids, runs, finals, metricLabel) {
    this.metricLabel = metricLabel;
    this.ids = ids.filter((id) => Number.isFinite(finals.get(id)));
    this.colors = new Map(ids.map((id, i) => [id, colorAt(i)]));
    this.finals = finals;
    const flat = this.ids.map((id) => flatten(runs.get(id).config));
    this.keys = differing(flat).differ.filter((key) => !isContext(key)).slice(0, MAX_AXES);
    this.axes = this.keys.map((key) => axis(key, flat.map((m) => m.get(key))));
    $("sweeps").hidden = this.ids.length < 3 || this.keys.length === 0;
    if ($("sweeps").hidden) return;
    const chosen = $("sweep-key").value;
    $("sweep-key").replaceChildren(...this.keys.map((key) => el("option", { value: key, text: key })));
    if (this.keys.includes(chosen)) $("sweep-key").value = chosen;
    this.picked = null;
    this.stale = true;
    if (this.inView) this.paint();
    this.say();
  }

  paint() {
    this.stale = false;
    this.drawParcoords();
    this.drawScatter();
  }

  drawParcoords() {
    const finals = this.ids.map((id) => this.finals.get(id));
    const dimensions = [...this.axes, { label: `${this.metricLabel} (final)`, values: finals }];
    const trace = { type: "parcoords", dimensions, line: { color: finals, colorscale: "Viridis", showscale: false } };
    const layout = { height: 300, margin: { l: 60, r: 60, t: 48, b: 20 } };
    const plot = $("parcoords");
    Plotly.react(plot, [trace], layout, { responsive: true, displaylogo: false });
    if (!this.drawn) {
      this.drawn = true;
      // A brush ends in a restyle of its axis' constraintrange.
      plot.on("plotly_restyle", () => this.pick(this.brushed(), false));
    }
  }

  /** The runs within every brushed axis' range (null: no axis brushed). */
  brushed() {
    const dims = $("parcoords").data[0].dimensions;
    const ranges = dims.map((d, i) => [i, d.constraintrange]).filter(([, r]) => r && r.length);
    if (!ranges.length) return null;
    return new Set(this.ids.filter((_, run) => ranges.every(([i, r]) => within(dims[i].values[run], r))));
  }

  drawScatter() {
    const key = $("sweep-key").value;
    const dim = this.axes[this.keys.indexOf(key)];
    if (!dim) return;
    const x = dim.ticktext ? dim.values.map((v) => dim.ticktext[v]) : dim.values;
    const trace = {
      type: "scatter",
      mode: "markers",
      x,
      y: this.ids.map((id) => this.finals.get(id)),
      customdata: this.ids,
      text: this.ids,
      marker: { size: 9, color: this.ids.map((id) => this.colors.get(id)) },
      hovertemplate: `%{text}<br>${key}: %{x}<br>${this.metricLabel}: %{y}<extra></extra>`,
    };
    const layout = {
      height: 300,
      margin: { l: 56, r: 12, t: 18, b: 40 },
      dragmode: "select",
      xaxis: { title: { text: key, standoff: 4 }, ...(dim.ticktext ? { type: "category" } : {}) },
      yaxis: { title: { text: `${this.metricLabel} (final)` }, exponentformat: "e" },
    };
    const plot = $("sweep-scatter");
    Plotly.react(plot, [trace], layout, { responsive: true, displaylogo: false });
    if (!this.scattered) {
      this.scattered = true;
      plot.on("plotly_selected", (event) => event && this.pick(new Set(event.points.map((p) => p.customdata)), false));
      plot.on("plotly_deselect", () => this.pick(null, false));
    }
  }

  /** Pick `ids` (null: every run); `clear` takes the brushes and the selection away. */
  pick(ids, clear) {
    this.picked = ids;
    if (clear && !this.stale) {
      Plotly.restyle($("parcoords"), Object.fromEntries(this.axes.concat([null]).map((_, i) => [`dimensions[${i}].constraintrange`, null])));
      this.picked = null;
      this.drawScatter();
    }
    this.say();
    this.onPick(this.picked);
  }

  say() {
    const n = this.picked ? this.picked.size : this.ids.length;
    $("sweep-picked").textContent = this.picked ? `${n} of ${this.ids.length} runs picked: the chart draws those.` : `All ${n} runs.`;
    $("sweep-all").hidden = !this.picked;
  }
}
