// What differs between compared runs: the config and context keys whose values differ.
// A few runs read best as a column each; past that the runs become rows, a column a key
// plus the chosen metric's final value, sortable by any of them.

import { colorAt } from "./charts.js";
import { el, fmtValue } from "./util.js";

export const COLUMNS_UPTO = 5; // runs shown as columns; more are rows

const $ = (id) => document.getElementById(id);

/** A config as dotted keys to JSON texts: nested objects are walked, lists and other
 * values kept whole (an empty object is a value too). */
export function flatten(value, prefix = "", out = new Map()) {
  const nested = value !== null && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length > 0;
  if (nested) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, out);
  } else if (prefix) {
    out.set(prefix, JSON.stringify(value));
  }
  return out;
}

export const isContext = (key) => key === "context" || key.startsWith("context.");
// Hyperparameters first, then where the run ran; by name within each.
const keyOrder = (a, b) => isContext(a) - isContext(b) || a.localeCompare(b);

/** The keys of `flat` (one Map a run) whose values differ, and those equal in every run. */
export function differing(flat) {
  const keys = [...new Set(flat.flatMap((m) => [...m.keys()]))].sort(keyOrder);
  const differ = keys.filter((key) => new Set(flat.map((m) => m.get(key))).size > 1);
  return { differ, equal: keys.filter((key) => !differ.includes(key)) };
}

/** A JSON text as a cell: strings as themselves, anything else as JSON; missing as a dash. */
function valueCell(json) {
  if (json === undefined) return el("td", { className: "missing", title: "not in this run's config", text: "–" });
  const value = JSON.parse(json);
  return el("td", {}, el("code", { text: typeof value === "string" ? value : json }));
}

const sorting = { key: null, descending: false }; // runs as rows: the column sorted by
const FINAL = "\u0000final"; // the metric's column, apart from any config key

/** Render the table. `ids` in colour order, `runs` by id, `finals` the chosen metric's
 * last value by id and `metricLabel` its name. */
export function renderDifferences(ids, runs, finals, metricLabel) {
  if (ids.length < 2) return;
  const flat = ids.map((id) => flatten(runs.get(id).config));
  const { differ, equal } = differing(flat);
  const asRows = ids.length > COLUMNS_UPTO;
  $("differences").dataset.layout = asRows ? "rows" : "columns";
  if (asRows) runsAsRows(ids, runs, flat, differ, finals, metricLabel);
  else keysAsRows(ids, runs, flat, differ);
  $("diff-rows").closest("table").hidden = differ.length === 0 && !asRows;
  $("no-differences").hidden = differ.length > 0;
  $("equal-rows").replaceChildren(
    ...equal.map((key) => el("tr", { "data-key": key }, el("th", {}, el("code", { text: key })), valueCell(flat[0].get(key)))),
  );
  $("equal-count").textContent = `${equal.length} equal ${equal.length === 1 ? "key" : "keys"}`;
  $("equal-keys").hidden = equal.length === 0;
  $("differences").hidden = false;
}

const runName = (id, i, runs) =>
  el("span", {}, el("span", { className: "swatch", style: `background:${colorAt(i)}` }), " ", runs.get(id).name);

function keysAsRows(ids, runs, flat, differ) {
  $("diff-head").replaceChildren(el("tr", {}, el("th", { text: "key" }), ...ids.map((id, i) => el("th", { title: id }, runName(id, i, runs)))));
  $("diff-rows").replaceChildren(
    ...differ.map((key) => el("tr", { "data-key": key }, el("th", {}, el("code", { text: key })), ...flat.map((m) => valueCell(m.get(key))))),
  );
}

/** Compare two JSON texts of a column: numbers by value, then other values by text;
 * missing last whichever the order. */
function compareCells(a, b, descending) {
  if (a === undefined || b === undefined) return (a === undefined) - (b === undefined);
  const [x, y] = [JSON.parse(a), JSON.parse(b)];
  const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
  return descending ? -order : order;
}

function runsAsRows(ids, runs, flat, differ, finals, metricLabel) {
  const index = new Map(ids.map((id, i) => [id, i]));
  const cells = new Map(ids.map((id, i) => {
    const final = finals.get(id);
    return [id, new Map([...flat[i], ...(Number.isFinite(final) ? [[FINAL, JSON.stringify(final)]] : [])])];
  }));
  const columns = [FINAL, ...differ];
  if (!columns.includes(sorting.key)) Object.assign(sorting, { key: null, descending: false });
  const order = [...ids];
  if (sorting.key) order.sort((a, b) => compareCells(cells.get(a).get(sorting.key), cells.get(b).get(sorting.key), sorting.descending) || index.get(a) - index.get(b));
  const header = (key) => {
    const label = key === FINAL ? `${metricLabel} (final)` : key;
    const sorted = sorting.key === key ? (sorting.descending ? "descending" : "ascending") : "none";
    const button = el("button", { type: "button", className: "link sort", text: label, title: `sort by ${label}` });
    button.addEventListener("click", () => {
      Object.assign(sorting, { descending: sorting.key === key && !sorting.descending, key });
      runsAsRows(ids, runs, flat, differ, finals, metricLabel);
    });
    return el("th", { "data-key": key === FINAL ? "final" : key, "aria-sort": sorted }, button);
  };
  $("diff-head").replaceChildren(el("tr", {}, el("th", { text: "run" }), ...columns.map(header)));
  $("diff-rows").replaceChildren(
    ...order.map((id) => el("tr", { "data-id": id },
      el("th", { title: id }, runName(id, index.get(id), runs)),
      el("td", { className: "num", text: Number.isFinite(finals.get(id)) ? fmtValue(finals.get(id)) : "–" }),
      ...differ.map((key) => valueCell(cells.get(id).get(key))),
    )),
  );
}
