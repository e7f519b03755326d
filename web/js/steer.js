// The run page's control panel and command history. The controls are built from what the
// training reports it can steer (`run.controls`): a field per param, a button per action,
// Pause/Resume, Checkpoint, and "when" to schedule any of them at a step or an epoch. A
// run whose training has said nothing (made through the API, a MonitorClient loop, a fit
// still starting) gets Stop and Pause only: what any loop that takes commands can honour.
// A rate that follows a schedule is shown, not offered.
// Each command is shown in the furthest state seen, whichever of the answer to the page's
// own POST or the stream's events comes first.

import { api, num } from "./api.js";
import { clearError, el, fmtTime, fmtValue, parts, showError, statusBadge } from "./util.js";

const $ = (id) => document.getElementById(id);
export const LIVE = ["running", "paused"];

// A command only moves forward: pending -> delivered (-> cancel asked) -> applied | failed | cancelled.
const STAGE = { pending: 0, delivered: 1, applied: 3, failed: 3, cancelled: 3 };
const stage = (c) => STAGE[c.status] + (c.status === "delivered" && c.cancel_requested_at ? 1 : 0);

export class Steering {
  /** `onMarkers(markers)` gets `[{step, label}]` of the applied commands. */
  constructor(runId, onMarkers) {
    this.runId = runId;
    this.onMarkers = onMarkers;
    this.commands = new Map(); // id -> command, in the furthest state seen
    this.run = null;
    this.shownControls = null;
    this.chartRate = null;
    this.numbers = new Map(); // command id -> its number in this run: 1, 2, ... as created
    this.unfolded = new Set(); // ids of the commands whose whole message is open
    this.wire();
  }

  get base() {
    return `/api/v1/runs/${encodeURIComponent(this.runId)}`;
  }

  /** Keep `c` unless a later state of the same command is known already. Of two final
   * states (an ack that came after a cancel), the one settled last is the truth. */
  remember(c) {
    const known = this.commands.get(c.id);
    const later = !known || stage(c) > stage(known) || (stage(c) === stage(known) && (c.done_at || "") >= (known.done_at || ""));
    if (later) this.commands.set(c.id, c);
  }

  /** Send `command`, scheduled as "when" says (it applies to this one command, then goes
   * back to "now"). Resume is never scheduled: a paused training stays at its step. */
  async send(command) {
    const when = $("when").value;
    let body = command;
    if (when !== "now" && command.type !== "resume") {
      const input = $("when-value");
      const place = Number(input.value);
      if (!input.value.trim() || !Number.isInteger(place) || place < 0) {
        input.setCustomValidity(`An ${when} is a whole number from 0.`);
        input.reportValidity();
        return;
      }
      body = { ...command, at: { [when]: place } };
      $("when").value = "now";
      input.hidden = true;
    }
    try {
      this.remember(await api(`${this.base}/commands`, { method: "POST", body }));
      clearError();
      this.render();
    } catch (error) {
      showError(error);
    }
  }

  async cancel(c) {
    try {
      this.remember(await api(`${this.base}/commands/${c.id}/cancel`, { method: "POST" }));
      clearError();
      this.render();
    } catch (error) {
      showError(error);
    }
  }

  wire() {
    $("stop").addEventListener("click", () => {
      if (window.confirm(`Stop the training of "${this.run.name}" after its current batch?`)) this.send({ type: "stop_training" });
    });
    $("pause").addEventListener("click", () => this.send({ type: this.run.status === "paused" ? "resume" : "pause" }));
    numberForm($("lr-form"), $("lr-value"), (value) => this.send({ type: "set_lr", args: this.lrArgs({ value }) }), "A learning rate is a number greater than 0.", (v) => v > 0);
    $("lr-half").addEventListener("click", () => this.send({ type: "set_lr", args: this.lrArgs({ factor: 0.5 }) }));
    $("checkpoint-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const name = $("checkpoint-name").value.trim();
      this.send(name ? { type: "checkpoint", args: { name } } : { type: "checkpoint" });
    });
    $("when").addEventListener("change", () => ($("when-value").hidden = $("when").value === "now"));
    $("when-value").addEventListener("input", () => $("when-value").setCustomValidity(""));
  }

  /** set_lr's args for the optimizer chosen, when the model has several. */
  lrArgs(args) {
    const select = $("lr-optimizer");
    return select.hidden || select.value === "" ? args : { ...args, optimizer: select.value };
  }

  /** The rate as the training reports it, with Set and ×0.5 only where it takes one. A
   * rate it does not report (a schedule's) is the lr chart's newest, `chartRate`. */
  showRate() {
    const controls = this.run?.controls;
    const optimizers = controls?.optimizers || [];
    $("lr-optimizer").hidden = optimizers.length < 2;
    $("lr-form").hidden = rateControl(controls) !== "set";
    $("lr-current").hidden = !controls;
    if (!controls) return;
    if (optimizers.length > 1) return this.showOptimizers(optimizers);
    const lr = controls.params?.learning_rate;
    const now = this.chartRate === null ? "" : ` ${fmtValue(this.chartRate)}`;
    $("lr-current").textContent = lr === undefined ? `learning rate${now}: follows a schedule, not set from here` : `current rate: ${fmtValue(num(lr))}`;
  }

  /** The lr chart's newest value. */
  showChartRate(lr) {
    this.chartRate = lr;
    this.showRate();
  }

  /** A model with several optimizers: a choice of which one a rate goes to ("every
   * optimizer": each one the training step uses; a schedule's is not offered), and each
   * one's rate. */
  showOptimizers(optimizers) {
    const select = $("lr-optimizer");
    const names = optimizers.filter((o) => o.settable).map((o) => o.name);
    const shown = [...select.options].slice(1).map((o) => o.value);
    if (JSON.stringify(names) !== JSON.stringify(shown)) {
      const chosen = select.value;
      select.replaceChildren(el("option", { value: "", text: "every optimizer" }), ...names.map((name) => el("option", { value: name, text: name })));
      select.value = names.includes(chosen) ? chosen : "";
    }
    const rate = (o) => (o.learning_rate === null ? "unknown" : fmtValue(num(o.learning_rate))) + (o.settable ? "" : " (schedule)") + (o.used === false ? " (unused)" : "");
    $("lr-current").textContent = `current rates: ${optimizers.map((o) => `${o.name} ${rate(o)}`).join(", ")}`;
  }

  /** The run changed: its status enables the controls, its `controls` shapes them. */
  update(run) {
    this.run = run;
    const live = LIVE.includes(run.status);
    const controls = run.controls || null;
    const key = JSON.stringify(controls && { params: Object.keys(controls.params || {}), actions: controls.actions || [] });
    if (key !== this.shownControls) {
      this.shownControls = key;
      this.buildParams(controls);
    }
    $("pause").textContent = run.status === "paused" ? "Resume" : "Pause";
    $("checkpoint-form").hidden = !controls;
    $("checkpoint-form").title = controls?.checkpoint_dir ? `saves into ${controls.checkpoint_dir}` : "";
    for (const node of document.querySelectorAll("#controls button, #controls input, #controls select")) node.disabled = !live;
    $("controls-reason").textContent = !live ? `Controls are off: the run is ${run.status}.` : controls ? "" : UNTOLD;
    this.showRate();
    for (const [name, value] of Object.entries(controls?.params || {})) {
      const current = document.querySelector(`[data-param="${CSS.escape(name)}"] .current`);
      if (current) current.textContent = `now ${fmtValue(num(value))}`;
    }
  }

  buildParams(controls) {
    const params = Object.keys(controls?.params || {}).filter((name) => name !== "learning_rate");
    $("params").replaceChildren(
      ...params.map((name) => {
        const input = el("input", { type: "text", inputmode: "decimal", size: "8", "aria-label": name });
        const form = el("form", { className: "inline", "data-param": name }, el("label", {}, `${name} `, input), el("button", { type: "submit", text: "Set" }), el("span", { className: "muted current" }));
        numberForm(form, input, (value) => this.send({ type: "set_param", args: { name, value } }), "A finite number.", () => true);
        return form;
      }),
    );
    $("actions").replaceChildren(
      ...(controls?.actions || []).map((name) => el("button", { type: "button", "data-action": name, text: name, onclick: () => this.send({ type: "action", args: { name } }) })),
    );
  }

  render() {
    const rows = [...this.commands.values()].sort((a, b) => b.id - a.id);
    this.numbers = new Map(rows.map((c, i) => [c.id, rows.length - i]));
    $("commands").replaceChildren(
      ...rows.map((c) =>
        el(
          "tr",
          { "data-id": String(c.id) },
          el("td", { text: String(this.numbers.get(c.id)) }),
          el("td", { text: label(c) }),
          this.statusCell(c),
          el("td", { text: c.step === null ? "" : String(c.step) }),
          this.messageCell(c),
          el("td", { text: fmtTime(c.created_at) }),
        ),
      ),
    );
    $("no-commands").hidden = rows.length > 0;
    this.onMarkers(rows.filter((c) => c.status === "applied" && c.step !== null).map((c) => ({ step: c.step, label: marker(c) })));
  }

  /** A message in one line, its first paragraph; the rest (the example code Keras adds
   * to an error) folded under it, staying open while the table redraws. */
  messageCell(c) {
    const text = (c.message || "").trim();
    const blank = /\n[ \t]*\n/.exec(text);
    const line = (blank ? text.slice(0, blank.index) : text).replace(/\s+/g, " ");
    if (!blank) return el("td", { text: line });
    const toggle = (event) => (event.target.open ? this.unfolded.add(c.id) : this.unfolded.delete(c.id));
    const rest = el("pre", { text: text.slice(blank.index + blank[0].length) });
    return el("td", {}, el("details", { className: "message", open: this.unfolded.has(c.id), ontoggle: toggle }, el("summary", { text: line }), rest));
  }

  statusCell(c) {
    const cell = el("td", {}, statusBadge(c.status));
    if (c.status === "delivered" && c.cancel_requested_at) cell.append(el("span", { className: "muted", text: " cancel asked" }));
    else if (c.status === "pending" || c.status === "delivered") {
      cell.append(" ", el("button", { type: "button", className: "small", onclick: () => this.cancel(c), text: "Cancel" }));
    }
    return cell;
  }
}

/** What a run without `controls` is told: no training has said what it can steer. */
const UNTOLD =
  "No training has said what it can steer (a run made through the API, a MonitorClient loop, a fit still starting): " +
  "Stop and Pause act only if a loop takes them; the rate and the rest appear once a training reports them.";

/** "set" where the training takes a rate (its one optimizer's, or one at least of its
 * several), "schedule" where it reports the rate follows one; null without controls. */
function rateControl(controls) {
  if (!controls) return null;
  const optimizers = controls.optimizers || [];
  const takes = optimizers.length > 1 ? optimizers.some((o) => o.settable) : controls.params?.learning_rate !== undefined;
  return takes ? "set" : "schedule";
}

/** Submit `form` with the number in `input` when `ok(value)`; else say why in the field. */
function numberForm(form, input, submit, why, ok) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = Number(input.value);
    if (!input.value.trim() || !Number.isFinite(value) || !ok(value)) {
      input.setCustomValidity(why);
      input.reportValidity();
      return;
    }
    input.setCustomValidity("");
    submit(value);
  });
  input.addEventListener("input", () => input.setCustomValidity(""));
}

function args(c) {
  const a = c.args || {};
  switch (c.type) {
    case "set_lr":
      return "factor" in a ? `×${fmtValue(num(a.factor))}` : fmtValue(num(a.value));
    case "set_param":
      return `${a.name} = ${fmtValue(num(a.value))}`;
    case "pause":
      return a.timeout ? `${a.timeout} s` : "";
    case "checkpoint":
    case "action":
      return a.name || "";
    default:
      return "";
  }
}

function label(c) {
  const at = c.at ? ` at ${Object.entries(c.at).map(([k, v]) => `${k} ${v}`).join(" ")}` : "";
  const by = c.issued_by?.startsWith("rule:") ? ` (by rule ${c.issued_by.slice(5)})` : "";
  return `${c.type} ${args(c)}`.trim() + at + by;
}

function marker(c) {
  const short = { stop_training: "stop", set_lr: "lr", set_param: "", pause: "pause", resume: "resume", checkpoint: "ckpt", action: "" };
  return `${short[c.type] ?? c.type} ${args(c)}`.trim();
}


const MAX_RUNS = 1000; // the most ids one `POST /api/v1/commands` takes

/** Stop, or set the learning rate of, several runs at once. `runs()` gives them: their ids
 * (the run list's ticked runs, the compared ones), or every run that matches the run
 * list's filters, `{matching, filtered, targets}`: how many match, whether any filter is
 * set, and a promise of the command's targets (`{project}`, or `{runs}` the live ones).
 * One command per running run, in one POST (one per 1,000 ids). A stop, and any command to
 * a whole filter, is confirmed first, naming how many runs; the answer says how many got
 * it and which were skipped, and why. */
export function fleetControls(parent, runs) {
  const result = el("span", { className: "muted", id: "fleet-result" });
  const send = async (what, command) => {
    const chosen = runs();
    if (what && !window.confirm(what(whom(chosen)))) return;
    result.textContent = "sending…";
    const answers = [];
    try {
      const targets = Array.isArray(chosen) ? { runs: chosen } : await chosen.targets();
      const bodies = targets.runs ? parts(targets.runs, MAX_RUNS).map((ids) => ({ runs: ids })) : [targets];
      if (!bodies.length) {
        result.textContent = `none of the ${chosen.matching} runs${those(chosen)} is running: nothing sent`;
        return;
      }
      for (const body of bodies) answers.push(await api("/api/v1/commands", { method: "POST", body: { ...body, ...command } }));
      result.textContent = answered(answers);
      clearError();
    } catch (error) {
      result.textContent = answers.length ? `${answered(answers)} before the error` : "";
      showError(error);
    }
  };
  const confirmAll = (what) => (Array.isArray(runs()) ? null : what);
  const stop = el("button", { type: "button", className: "danger", id: "fleet-stop", text: "Stop these runs" });
  stop.addEventListener("click", () => send((who) => `Stop ${who} after their current batch?`, { type: "stop_training" }));
  const input = el("input", { type: "text", inputmode: "decimal", size: "8", id: "fleet-lr", "aria-label": "learning rate", placeholder: "e.g. 0.001" });
  const form = el("form", { className: "inline" }, el("label", {}, "Learning rate ", input), el("button", { type: "submit", id: "fleet-lr-set", text: "Set" }));
  const setLr = (value) => send(confirmAll((who) => `Set the learning rate of ${who} to ${fmtValue(value)}?`), { type: "set_lr", args: { value } });
  numberForm(form, input, setLr, "A learning rate is a number greater than 0.", (v) => v > 0);
  parent.append(stop, form, result);
  return (enabled) => {
    for (const node of [stop, input, ...form.querySelectorAll("button")]) node.disabled = !enabled;
  };
}

/** The runs a confirmation names: "3 run(s)", or a whole filter's. */
const whom = (chosen) =>
  Array.isArray(chosen) ? `${chosen.length} run(s)` : `every run still running of all ${chosen.matching}${those(chosen)}`;
const those = (chosen) => (chosen.filtered ? " that match the filter" : "");

/** "sent to 5 run(s); skipped 3: the run is finished (a, b), the run is stopped (c)". */
function answered(answers) {
  const sent = answers.reduce((n, a) => n + a.commands.length, 0);
  const skipped = answers.flatMap((a) => a.skipped);
  const byReason = new Map();
  for (const s of skipped) byReason.set(s.reason, [...(byReason.get(s.reason) || []), s.run_id]);
  const reasons = [...byReason].map(([reason, ids]) => `${reason} (${ids.slice(0, 5).join(", ")}${ids.length > 5 ? ` and ${ids.length - 5} more` : ""})`);
  return `sent to ${sent} run(s)` + (skipped.length ? `; skipped ${skipped.length}: ${reasons.join(", ")}` : "");
}
