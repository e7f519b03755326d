// The run page's list of rule firings: what each rule saw, where, and the command it
// issued. Firings arrive from the first read and then live as `rule` events.

import { num } from "./api.js";
import { el, fmtTime, fmtValue } from "./util.js";

const $ = (id) => document.getElementById(id);
export const FIRING_COLOR = "#d62728";

export class Firings {
  /** `onMarkers(firings)` gets every firing, to mark on the chart of its series;
   * `commandNumber(id)` the number the run's command list shows for a command. */
  constructor(onMarkers, commandNumber) {
    this.onMarkers = onMarkers;
    this.commandNumber = commandNumber;
    this.firings = new Map(); // id -> firing
  }

  remember(firing) {
    this.firings.set(firing.id, firing);
  }

  render() {
    const rows = [...this.firings.values()].sort((a, b) => b.id - a.id);
    $("firings").replaceChildren(
      ...rows.map((f) =>
        el(
          "tr",
          { "data-id": String(f.id) },
          el("td", {}, el("a", { href: "/rules", text: `rule ${f.rule_id}` })),
          el("td", { text: f.description }),
          el("td", { text: f.suppressed ? `from ${f.step}` : String(f.step) }),
          el("td", { className: "num", text: fmtValue(typeof f.value === "string" ? f.value : num(f.value)) }),
          el("td", { text: f.command_id === null ? f.message || "notified" : `command ${this.commandNumber(f.command_id) ?? ""}`.trim() }),
          el("td", { text: fmtTime(f.created_at) }),
        ),
      ),
    );
    // A rule's row of firings suppressed past its bound is listed, not counted or marked.
    const fired = rows.filter((f) => !f.suppressed);
    $("rules-fired").hidden = rows.length === 0;
    $("rules-fired-count").textContent = String(fired.length);
    this.onMarkers(fired);
  }
}

/** A firing as a chart marker. */
export function marker(f) {
  return { step: f.step, scope: f.scope, wall: Date.parse(f.created_at) / 1000, label: `rule ${f.rule_id}`, color: FIRING_COLOR };
}
