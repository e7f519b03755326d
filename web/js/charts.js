// Plotly charts: several series on one chart, EMA smoothing (raw line kept faint), log-y,
// x by step / epoch / wall time (system samples: sample number or wall time), zoom that
// asks the server for the range, live points with Plotly.extendTraces, visible markers for
// NaN and ±Infinity, and markers where commands applied and rules fired.

import { num } from "./api.js";
import { el } from "./util.js";

const PALETTE = ["#1f6feb", "#e8710a", "#1a9c4b", "#9b51e0", "#d6336c", "#0f9fb5", "#7d6608", "#5c677d"];
const NONFINITE_COLOR = "#d62728";
const LIVE_LIMIT = 6000; // points a trace may grow to live before it is read again, downsampled

export const colorAt = (i) => PALETTE[i % PALETTE.length];

function ema(values, alpha) {
  const out = new Array(values.length);
  let last = null;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isFinite(v)) last = last === null ? v : alpha * last + (1 - alpha) * v;
    out[i] = Number.isFinite(v) ? last : null;
  }
  return out;
}

export class Chart {
  /**
   * @param {HTMLElement} parent where the chart goes
   * @param {object} opts title, onZoom(range) with range null (all) or a function of a series
   *   giving its [since, until] steps, settings (shared object:
   *   smoothing, logy, xmode, stepsPerEpoch)
   */
  constructor(parent, { title, onZoom, settings }) {
    this.settings = settings;
    this.onZoom = onZoom;
    this.series = new Map();
    this.markers = new Map(); // source (commands, rules) -> [{step, label, scope?, color?, wall?}]
    this.badge = el("span", { className: "badge downsampled", hidden: true });
    this.plot = el("div", { className: "plot" });
    this.node = el("section", { className: "chart" }, el("header", {}, el("h3", { text: title }), this.badge), this.plot);
    parent.append(this.node);
    this.zoomed = false;
    this.rendered = false;
  }

  /** Add a series; `scope` decides how steps map to epochs. */
  add(key, label, scope, color) {
    if (!this.series.has(key)) {
      this.series.set(key, { key, label, scope, color: color || colorAt(this.series.size), steps: [], values: [], walls: [] });
    }
    return this.series.get(key);
  }

  /** Replace a series' points with an answer of the series API. */
  setData(key, body) {
    const s = this.series.get(key);
    s.steps = body.steps.slice();
    s.values = body.values.map(num);
    s.walls = body.wall_times.slice();
    s.downsampled = body.downsampled;
    s.count = body.count;
  }

  /** Append live points to a series (steps in order). */
  extend(key, points) {
    const s = this.series.get(key);
    if (!s) return;
    for (const [step, value, wall] of points) {
      s.steps.push(step);
      s.values.push(num(value));
      s.walls.push(wall);
    }
    s.count = (s.count || 0) + points.length;
    this.scheduleRender();
    if (s.steps.length > LIVE_LIMIT && !this.zoomed && this.onZoom) this.onZoom(null);
  }

  /** Replace the markers of one `source`; a marker's `scope` (default batch) places it. */
  setMarkers(markers, source = "commands") {
    this.markers.set(source, markers);
    this.scheduleRender();
  }

  /** Steps in an epoch of series `s`: its own (runs compared may differ), else the page's. */
  perEpoch(s) {
    return s.scope === "batch" ? s.stepsPerEpoch || this.settings.stepsPerEpoch : null;
  }

  x(s, i) {
    const { xmode } = this.settings;
    if (xmode === "wall") return new Date(s.walls[i] * 1000);
    const perEpoch = this.perEpoch(s);
    return xmode === "epoch" && perEpoch ? s.steps[i] / perEpoch : s.steps[i];
  }

  /** The step of series `s` at `x` on the axis. */
  toStep(x, s) {
    const perEpoch = this.perEpoch(s);
    return this.settings.xmode === "epoch" && perEpoch ? x * perEpoch : x;
  }

  traces() {
    const { smoothing, xmode } = this.settings;
    const traces = [];
    for (const s of this.series.values()) {
      const xs = s.steps.map((_, i) => this.x(s, i));
      const finite = s.values.map((v) => (Number.isFinite(v) ? v : null));
      traces.push({
        name: s.label,
        x: xs,
        y: finite,
        type: "scatter",
        mode: xs.length <= 60 ? "lines+markers" : "lines",
        marker: { size: 5 },
        line: { color: s.color, width: smoothing > 0 ? 1 : 1.6, shape: s.key.endsWith("/lr") ? "hv" : "linear" },
        opacity: smoothing > 0 ? 0.25 : 1,
        showlegend: smoothing === 0,
        legendgroup: s.key,
        hovertemplate: `${s.label}: %{y}<extra></extra>`,
      });
      if (smoothing > 0) {
        traces.push({
          name: s.label,
          x: xs,
          y: ema(s.values, smoothing),
          mode: "lines",
          line: { color: s.color, width: 1.8 },
          legendgroup: s.key,
          hovertemplate: `${s.label} (smoothed): %{y}<extra></extra>`,
        });
      }
      // NaN and ±Infinity: a red mark at the last finite value before it, named in the hover.
      const bad = { x: [], y: [], text: [] };
      let last = 0;
      s.values.forEach((v, i) => {
        if (Number.isFinite(v)) last = v;
        else {
          bad.x.push(xs[i]);
          bad.y.push(last);
          bad.text.push(Number.isNaN(v) ? "NaN" : v > 0 ? "+Infinity" : "-Infinity");
        }
      });
      if (bad.x.length) {
        traces.push({
          name: `${s.label}: non-finite`,
          x: bad.x,
          y: bad.y,
          text: bad.text,
          mode: "markers",
          marker: { color: NONFINITE_COLOR, symbol: "x-thin-open", size: 12, line: { width: 2, color: NONFINITE_COLOR } },
          hovertemplate: `${s.label}: %{text} at %{x}<extra></extra>`,
          legendgroup: s.key,
          showlegend: false,
          meta: "nonfinite",
        });
      }
    }
    return traces;
  }

  layout() {
    const { logy, xmode } = this.settings;
    const scopes = [...this.series.values()].map((s) => s.scope);
    const epochs = scopes.every((scope) => scope !== "batch");
    const samples = scopes.length > 0 && scopes.every((scope) => scope === "system"); // steps are sample numbers
    const shapes = [];
    const annotations = [];
    for (const m of [...this.markers.values()].flat()) {
      if (xmode === "wall" && m.wall === undefined) continue;
      const s = { scope: m.scope || "batch", steps: [m.step], walls: [m.wall] };
      const x = this.x(s, 0);
      const color = m.color || "#6e7781";
      shapes.push({ type: "line", x0: x, x1: x, yref: "paper", y0: 0, y1: 1, line: { color, width: 1, dash: "dot" } });
      annotations.push({ x, yref: "paper", y: 1, text: m.label, showarrow: false, yanchor: "bottom", font: { size: 10, color } });
    }
    return {
      margin: { l: 48, r: 12, t: 18, b: 36 },
      height: 260,
      hovermode: "x unified",
      legend: { orientation: "h", y: -0.22 },
      xaxis: {
        title: { text: xmode === "wall" ? "" : samples ? "sample" : epochs || xmode === "epoch" ? "epoch" : "step", standoff: 4 },
        type: xmode === "wall" ? "date" : "linear",
        tickformat: xmode !== "wall" && epochs ? "d" : undefined,
      },
      yaxis: { type: logy ? "log" : "linear", exponentformat: "e", range: this.flatRange(logy) },
      shapes,
      annotations,
      uirevision: `${xmode}-${logy}`,
    };
  }

  /** A y range around a series that never changes (Plotly would span ±1 around it). */
  flatRange(logy) {
    const values = [...this.series.values()].flatMap((s) => s.values.filter(Number.isFinite));
    if (!values.length || logy || values.some((v) => v !== values[0]) || values[0] === 0) return undefined;
    const v = values[0];
    return [v - Math.abs(v) / 2, v + Math.abs(v) / 2];
  }

  scheduleRender() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = null;
      this.render();
    });
  }

  render() {
    const downsampled = [...this.series.values()].filter((s) => s.downsampled);
    this.badge.hidden = downsampled.length === 0;
    if (downsampled.length) {
      const s = downsampled[0];
      this.badge.textContent = `downsampled ${s.steps.length.toLocaleString()} / ${s.count.toLocaleString()}`;
      this.badge.title = "Each bucket keeps its min and max, and every NaN/Inf point. Zoom in for full resolution.";
    }
    const config = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
    Plotly.react(this.plot, this.traces(), this.layout(), config);
    if (!this.rendered) {
      this.rendered = true;
      this.plot.on("plotly_relayout", (event) => this.relayout(event));
      // `responsive` follows the window; the page can change a chart's width without it
      // (a group of charts showing beside this one, a scrollbar).
      let width = this.plot.clientWidth;
      new ResizeObserver(() => {
        if (!this.plot.clientWidth || this.plot.clientWidth === width) return; // hidden or removed, or only taller
        width = this.plot.clientWidth;
        Plotly.Plots.resize(this.plot);
      }).observe(this.plot);
    }
  }

  relayout(event) {
    if (!this.onZoom || this.settings.xmode === "wall") return;
    if (event["xaxis.autorange"]) {
      this.zoomed = false;
      this.onZoom(null);
    } else {
      // A drag gives range[0] and range[1]; Plotly.relayout may give the whole range.
      const range = event["xaxis.range"] || [event["xaxis.range[0]"], event["xaxis.range[1]"]];
      if (range[0] === undefined) return;
      this.zoomed = true;
      // Each series' own steps: runs compared by epoch have different steps per epoch.
      this.onZoom((s) => {
        const since = Math.max(0, Math.floor(this.toStep(range[0], s)));
        return [since, Math.max(since, Math.ceil(this.toStep(range[1], s)))];
      });
    }
  }
}
