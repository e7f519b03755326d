// Plotly charts: several series on one chart, EMA smoothing (raw line kept faint), log-y,
// x by step / epoch / wall time (system samples: sample number or wall time), zoom that
// asks the server for the range, live points with Plotly.extendTraces, visible markers for
// NaN, ±Infinity and values too large to draw, and markers where commands applied and
// rules fired, merged where their labels would overlap. Many series (a compare of a
// hundred runs) are drawn one highlighted at a time, the others faded.

import { num } from "./api.js";
import { el, fmtValue } from "./util.js";

const PALETTE = ["#1f6feb", "#e8710a", "#1a9c4b", "#9b51e0", "#d6336c", "#0f9fb5", "#7d6608", "#5c677d"];
const NONFINITE_COLOR = "#d62728";
const MARKER_COLOR = "#6e7781";
const LIVE_LIMIT = 6000; // points a trace may grow to live before it is read again, downsampled
// Plotly's paths break (NaN in the SVG) on values a few orders past this: 1e305 did.
const DRAWABLE = 1e300;
const LABEL_CHARS = 24; // a marker's label is cut there; its hover has it whole
const CHAR_PX = 6; // about the width of a character of a marker's 10 px label
const TICK_CHAR_PX = 8; // ... and of a tick label's
// Lines are SVG whatever their number: Plotly simplifies a line to what its pixels show,
// so 100 runs of 2,000 points redraw in ~0.2 s, where WebGL without a GPU (a software
// renderer reads the canvas back every frame) took 0.8 to 1.4 s (bench/pages.py --compare).
const FEW = 8; // series a chart names in its own legend and its hover, all at once
const FADED = 0.12; // opacity of the series not highlighted, as a share of their own

export const colorAt = (i) => PALETTE[i % PALETTE.length];

const drawable = (v) => Number.isFinite(v) && Math.abs(v) <= DRAWABLE;

function ema(values, alpha) {
  const out = new Array(values.length);
  let last = null;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (drawable(v)) last = last === null ? v : alpha * last + (1 - alpha) * v;
    out[i] = drawable(v) ? last : null;
  }
  return out;
}

/** The points a line cannot show, each as a mark at the last drawable value before it
 * (the first one, for those before any) named in the hover: NaN, ±Infinity, and finite
 * values past DRAWABLE with their value. */
function undrawn(values) {
  const marks = [];
  let last = values.find(drawable) ?? 0;
  values.forEach((v, i) => {
    if (drawable(v)) last = v;
    else marks.push({ i, y: last, text: Number.isNaN(v) ? "NaN" : Number.isFinite(v) ? fmtValue(v) : v > 0 ? "+Infinity" : "-Infinity" });
  });
  return marks;
}

/** Whole-number ticks for an axis of steps, epochs or samples from `lo` to `hi`, `width`
 * px wide: over a short span Plotly ticks fractions (two epochs read "0 0 0 1 1 1"), so
 * there the ticks go by 1 (2 or 5 where long numbers would not fit), and it spans a lone
 * point from -1 to 1, so that gets ±0.5. */
function wholeTicks(lo, hi, width) {
  const axis = { tickformat: "d" };
  if (hi - lo < 10) {
    const fit = Math.max(1, Math.floor(width / (String(Math.round(hi)).length * TICK_CHAR_PX + 20)));
    const dtick = [1, 2, 5].find((d) => (hi - lo) / d < fit) ?? 10;
    Object.assign(axis, { tickmode: "linear", tick0: 0, dtick });
  }
  if (hi === lo) axis.range = [lo - 0.5, hi + 0.5];
  return axis;
}

const cut = (label) => (label.length > LABEL_CHARS ? `${label.slice(0, LABEL_CHARS - 1)}…` : label);
const groupText = (group) => cut(group[0].label) + (group.length > 1 ? ` +${group.length - 1}` : "");
const labelPx = (text) => text.length * CHAR_PX;

export class Chart {
  /**
   * @param {HTMLElement} parent where the chart goes
   * @param {object} opts title, onZoom(range) with range null (all) or a function of a series
   *   giving its [since, until] steps, settings (shared object:
   *   smoothing, logy, xmode, stepsPerEpoch), xmode (this chart's own, over the settings'),
   *   reach (a Map of scope to the newest {step, wall} seen: series are step lines, each
   *   drawn on to its scope's reach)
   */
  constructor(parent, { title, onZoom, settings, xmode = null, reach = null }) {
    this.settings = settings;
    this.onZoom = onZoom;
    this.ownXmode = xmode;
    this.reach = reach;
    this.series = new Map();
    this.markers = new Map(); // source (commands, rules) -> [{step, label, scope?, color?, wall?}]
    this.badge = el("span", { className: "badge downsampled", hidden: true });
    this.tooLarge = el("span", {
      className: "badge too-large",
      hidden: true,
      title: `Values beyond ±${DRAWABLE} cannot be drawn: each is a red × at the value before it; hover it for the value.`,
    });
    this.plot = el("div", { className: "plot" });
    const badges = el("span", { className: "badges" }, this.tooLarge, this.badge);
    this.node = el("section", { className: "chart" }, el("header", {}, el("h3", { text: title }), badges), this.plot);
    parent.append(this.node);
    this.zoomed = false;
    this.rendered = false;
    this.highlighted = null; // the key of the series drawn over the faded others
    this.shown = null; // the keys of the series drawn (null: all)
  }

  /** Draw series `key` over the others, faded (null: none); a chart's hover does it too. */
  highlight(key) {
    if (key === this.highlighted) return;
    this.highlighted = key;
    if (this.rendered) Plotly.restyle(this.plot, { opacity: this.plot.data.map((t) => this.opacity(t)) });
  }

  /** Draw only the series of `keys` (null: every one). */
  only(keys) {
    this.shown = keys;
    if (this.rendered) this.render();
  }

  opacity(trace) {
    const own = trace.meta === "raw" && this.settings.smoothing > 0 ? 0.25 : 1;
    return this.highlighted !== null && trace.legendgroup !== this.highlighted ? own * FADED : own;
  }

  drawnSeries() {
    return [...this.series.values()].filter((s) => !this.shown || this.shown.has(s.key));
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

  xmode() {
    return this.ownXmode || this.settings.xmode;
  }

  x(s, i) {
    const xmode = this.xmode();
    if (xmode === "wall") return new Date(s.walls[i] * 1000);
    const perEpoch = this.perEpoch(s);
    return xmode === "epoch" && perEpoch ? s.steps[i] / perEpoch : s.steps[i];
  }

  /** The step of series `s` at `x` on the axis. */
  toStep(x, s) {
    const perEpoch = this.perEpoch(s);
    return this.xmode() === "epoch" && perEpoch ? x * perEpoch : x;
  }

  /** Where the step line of series `s` ends: its scope's reach, when past its last point. */
  reachOf(s) {
    const reach = this.reach?.get(s.scope);
    const last = s.values.length - 1;
    return reach && last >= 0 && reach.step > s.steps[last] && drawable(s.values[last]) ? reach : null;
  }

  /** The lowest and highest x of the points drawn (steps come in order), reaches included. */
  extent() {
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of this.series.values()) {
      if (!s.steps.length) continue;
      const reach = this.reachOf(s);
      lo = Math.min(lo, this.x(s, 0));
      hi = Math.max(hi, reach ? this.x({ ...s, steps: [reach.step], walls: [reach.wall] }, 0) : this.x(s, s.steps.length - 1));
    }
    return [lo, hi];
  }

  traces() {
    const { smoothing } = this.settings;
    const traces = [];
    for (const s of this.drawnSeries()) {
      const xs = s.steps.map((_, i) => this.x(s, i));
      const ys = s.values.map((v) => (drawable(v) ? v : null));
      const sizes = xs.map(() => 5);
      const reach = this.reachOf(s);
      if (reach) {
        // The value holds until now: a step on to the newest step seen, with no dot there.
        xs.push(this.x({ ...s, steps: [reach.step], walls: [reach.wall] }, 0));
        ys.push(ys.at(-1));
        sizes.push(0);
      }
      traces.push({
        name: s.label,
        x: xs,
        y: ys,
        type: "scatter",
        mode: xs.length <= 60 ? "lines+markers" : "lines",
        marker: { size: sizes },
        line: { color: s.color, width: smoothing > 0 ? 1 : 1.6, shape: this.reach ? "hv" : "linear" },
        showlegend: smoothing === 0,
        legendgroup: s.key,
        hovertemplate: `${s.label}: %{y}<extra></extra>`,
        meta: "raw",
      });
      if (smoothing > 0) {
        traces.push({
          name: s.label,
          x: xs,
          y: ema(s.values, smoothing),
          type: "scatter",
          mode: "lines",
          line: { color: s.color, width: 1.8 },
          legendgroup: s.key,
          hovertemplate: `${s.label} (smoothed): %{y}<extra></extra>`,
        });
      }
      const marks = undrawn(s.values);
      if (marks.length) {
        traces.push({
          name: `${s.label}: non-finite`,
          x: marks.map((m) => xs[m.i]),
          y: marks.map((m) => m.y),
          text: marks.map((m) => m.text),
          type: "scatter",
          mode: "markers",
          marker: { color: NONFINITE_COLOR, symbol: "x-thin-open", size: 12, line: { width: 2, color: NONFINITE_COLOR } },
          hovertemplate: `${s.label}: %{text} at %{x}<extra></extra>`,
          legendgroup: s.key,
          showlegend: false,
          meta: "nonfinite",
        });
      }
    }
    for (const t of traces) t.opacity = this.opacity(t);
    return traces;
  }

  layout() {
    const { logy } = this.settings;
    const xmode = this.xmode();
    const scopes = [...this.series.values()].map((s) => s.scope);
    const few = this.drawnSeries().length <= FEW;
    const epochs = scopes.every((scope) => scope !== "batch");
    const samples = scopes.length > 0 && scopes.every((scope) => scope === "system"); // steps are sample numbers
    const [lo, hi] = this.extent();
    const width = Math.max(100, (this.plot.clientWidth || 800) - 60); // the plot area, about
    const markers = this.markerLayout(xmode, lo, hi, width);
    // Steps, epochs and samples are whole numbers; a batch's epoch is a fraction.
    const whole = xmode !== "wall" && (epochs || xmode === "step") && lo <= hi;
    return {
      // Marker labels go below the mode bar (22 px, shown on hover), which would cover them.
      margin: { l: 48, r: 12, t: markers.annotations.length ? 42 : 18, b: 36 },
      height: 260,
      // Many runs: the hover names the nearest one (and highlights it), the page lists them.
      hovermode: few ? "x unified" : "closest",
      showlegend: few,
      legend: { orientation: "h", y: -0.22 },
      xaxis: {
        title: { text: xmode === "wall" ? "" : samples ? "sample" : epochs || xmode === "epoch" ? "epoch" : "step", standoff: 4 },
        type: xmode === "wall" ? "date" : "linear",
        ...(whole ? wholeTicks(lo, hi, width) : {}),
        ...(xmode === "wall" && lo === hi ? { range: [new Date(lo - 60_000), new Date(hi + 60_000)] } : {}),
      },
      yaxis: { type: logy ? "log" : "linear", exponentformat: "e", range: this.flatRange(logy) },
      ...markers,
      uirevision: `${xmode}-${logy}`,
    };
  }

  /** A dotted line at each marker, and its label above the chart. Labels that would
   * overlap (commands a few steps apart) merge into one, "first +N", with every label in
   * its hover. Where a label falls is estimated from the points' extent `lo`..`hi` over
   * `width` px. */
  markerLayout(xmode, lo, hi, width) {
    const placed = [];
    for (const m of [...this.markers.values()].flat()) {
      if (xmode === "wall" && m.wall === undefined) continue;
      const x = this.x({ scope: m.scope || "batch", steps: [m.step], walls: [m.wall] }, 0);
      placed.push({ x, at: Number(x), label: m.label, color: m.color || MARKER_COLOR });
    }
    if (!placed.length) return { shapes: [], annotations: [] };
    placed.sort((a, b) => a.at - b.at);
    const from = Math.min(lo, placed[0].at);
    const span = Math.max(hi, placed.at(-1).at) - from;
    const px = (at) => (span > 0 ? ((at - from) / span) * width : 0);
    const groups = [];
    for (const p of placed) {
      const group = groups.at(-1);
      const right = group && px(group[0].at) + labelPx(groupText(group)) / 2;
      if (group && px(p.at) - labelPx(cut(p.label)) / 2 < right + CHAR_PX) group.push(p);
      else groups.push([p]);
    }
    return {
      shapes: placed.map(({ x, color }) => ({ type: "line", x0: x, x1: x, yref: "paper", y0: 0, y1: 1, line: { color, width: 1, dash: "dot" } })),
      annotations: groups.map((group) => {
        const colors = new Set(group.map((p) => p.color));
        return {
          x: group[0].x,
          yref: "paper",
          y: 1,
          text: groupText(group),
          hovertext: group.map((p) => p.label).join("<br>"),
          showarrow: false,
          yanchor: "bottom",
          font: { size: 10, color: colors.size === 1 ? group[0].color : MARKER_COLOR },
        };
      }),
    };
  }

  /** A y range around a series that never changes (Plotly would span ±1 around it). */
  flatRange(logy) {
    const values = [...this.series.values()].flatMap((s) => s.values.filter(drawable));
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
    const huge = [...this.series.values()].reduce((n, s) => n + s.values.filter((v) => Number.isFinite(v) && !drawable(v)).length, 0);
    this.tooLarge.hidden = huge === 0;
    this.tooLarge.textContent = `${huge} value${huge === 1 ? "" : "s"} too large to draw`;
    const config = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
    Plotly.react(this.plot, this.traces(), this.layout(), config);
    if (!this.rendered) {
      this.rendered = true;
      this.plot.on("plotly_relayout", (event) => this.relayout(event));
      let unhover = null; // a redraw ends a hover: wait for the next before fading back
      this.plot.on("plotly_hover", (event) => {
        clearTimeout(unhover);
        if (this.plot.layout.hovermode === "closest") this.highlight(event.points[0]?.data.legendgroup ?? null);
      });
      this.plot.on("plotly_unhover", () => {
        clearTimeout(unhover);
        unhover = setTimeout(() => this.highlight(null), 150);
      });
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
    if (!this.onZoom || this.xmode() === "wall") return;
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
