// The run list: a page of runs at a time, filtered, searched and sorted by the server;
// live rows over SSE; tags edited in place; the selection to compare or steer: runs ticked
// (on any page), or every run that matches the filters.

import { api, apiPage, stream } from "./api.js";
import { apiPath, filtered, filterQuery, fromUrl, matches, newestFirst, PAGE_SIZE, sortBy, sortKey, toUrl } from "./liststate.js";
import { matchingTargets } from "./matching.js";
import { fleetControls } from "./steer.js";
import { chip, tagEditor } from "./tags.js";
import { el, fmtDate, fmtDuration, fmtValue, runSeconds, showError, statusBadge } from "./util.js";

const $ = (id) => document.getElementById(id);
const state = fromUrl();
let runs = []; // the page shown, in order
let total = 0; // runs that match the filters, on every page
const selected = new Set(); // ids, kept across pages
let allMatching = false; // every run that matches the filters is selected, on every page
// Every project the server has (read with each page) and those of runs seen live; the
// metric names of the runs seen so far.
const projects = new Set();
const metrics = new Set();
let enableFleet = () => {};
let asked = 0; // the newest read of the list: an older answer is dropped
let settle = null; // a read again after live changes, once they pause

const byMetricName = (a, b) => a.startsWith("val_") - b.startsWith("val_") || a.localeCompare(b);

/** A name cut short where it is long, whole on hover. */
const cut = (name) => el("span", { className: "cut", title: name, text: name });

function latest(run) {
  const names = Object.keys(run.latest).sort(byMetricName).slice(0, 4);
  return names.flatMap((n, i) => [i ? " · " : "", el("span", { className: "metric" }, cut(n), ` ${fmtValue(run.latest[n])}`)]);
}

function row(run) {
  const box = el("input", { type: "checkbox", className: "pick", "aria-label": `select ${run.name}` });
  box.checked = allMatching || selected.has(run.id);
  box.addEventListener("change", () => {
    if (allMatching) {
      // Unticking one of a whole filter leaves the page ticked, less that one.
      allMatching = false;
      for (const r of runs) selected.add(r.id);
    }
    box.checked ? selected.add(run.id) : selected.delete(run.id);
    selectionChanged();
  });
  const note = run.note ? el("div", { className: "run-note", title: run.note, text: run.note.split("\n")[0] }) : null;
  return el(
    "tr",
    { "data-id": run.id, "data-status": run.status },
    el("td", {}, box),
    el("td", {}, el("a", { href: `/runs/${encodeURIComponent(run.id)}`, text: run.name }), note),
    el("td", { className: "opt" }, tagEditor(run, { onPick: filterByTag, onSaved: showRun })),
    el("td", { className: "opt" }, cut(run.project)),
    el("td", {}, statusBadge(run.status)),
    el("td", { className: "opt date", text: fmtDate(run.created_at) }),
    el("td", { className: "opt duration", text: fmtDuration(runSeconds(run)) }),
    el("td", { className: "opt num", text: state.metric ? fmtValue(run.latest[state.metric]) : "" }),
    el("td", { className: "latest" }, latest(run)),
  );
}

function remember(list) {
  for (const run of list) {
    projects.add(run.project);
    for (const name of Object.keys(run.latest)) metrics.add(name);
  }
}

/** A filter's choices; a long one is cut short in the closed select, whole on hover. */
function options(select, values, current, blank) {
  select.replaceChildren(el("option", { value: "", text: blank }), ...values.map((v) => el("option", { value: v, text: v, title: v })));
  select.value = current;
  select.title = current;
}

function render() {
  $("runs").replaceChildren(...runs.map(row));
  const first = (state.page - 1) * PAGE_SIZE;
  $("range").textContent = total ? `${first + 1}–${first + runs.length} of ${total}` : "";
  $("prev").disabled = state.page === 1;
  $("next").disabled = first + runs.length >= total;
  $("empty").hidden = total > 0 || filtered(state);
  $("no-match").hidden = total > 0 || !filtered(state);

  options($("project"), [...projects].sort(), state.project, "all");
  options($("metric"), [...metrics].sort(byMetricName), state.metric, "metric…");
  $("status").value = state.status;
  for (const th of document.querySelectorAll("th[data-sort]")) {
    const on = sortKey(state) === th.dataset.sort;
    th.setAttribute("aria-sort", on ? (state.order === "asc" ? "ascending" : "descending") : "none");
  }
  document.querySelector("th[data-sort=metric] .sort").disabled = !state.metric;
  $("tag-filters").replaceChildren(
    state.tags.length ? el("span", { className: "muted", text: "tagged" }) : "",
    ...state.tags.map((tag) =>
      chip(tag, { onRemove: () => change({ tags: state.tags.filter((t) => t !== tag) }), removeLabel: `stop filtering by tag ${tag}` }),
    ),
  );
  selectionChanged();
}

async function load() {
  toUrl(state);
  const ask = ++asked;
  const [page, known] = await Promise.all([apiPage(apiPath(state)), api("/api/v1/projects")]);
  if (ask !== asked) return;
  for (const project of known) projects.add(project.name);
  // Past the last page (runs were deleted): show the last one.
  if (!page.items.length && page.total && state.page > 1) {
    state.page = Math.ceil(page.total / PAGE_SIZE);
    return load();
  }
  runs = page.items;
  total = page.total;
  remember(runs);
  render();
}

const reload = () => load().catch(showError);

function readSoon() {
  clearTimeout(settle);
  settle = setTimeout(reload, 300);
}

/** Filters changed: back to the first page; a selection of the old filter's every run goes. */
function change(patch) {
  Object.assign(state, patch, { page: 1 });
  if (allMatching) clearSelection();
  reload();
}

function filterByTag(tag) {
  if (!state.tags.includes(tag)) change({ tags: [...state.tags, tag] });
}

/** Show a newer state of a run on this page; false when it is not on it. */
function showRun(run) {
  const i = runs.findIndex((r) => r.id === run.id);
  if (i < 0) return false;
  runs[i] = run;
  remember([run]);
  [...$("runs").children].find((tr) => tr.dataset.id === run.id)?.replaceWith(row(run));
  return true;
}

/** Every run on the page shown is ticked. */
const pageTicked = () => runs.length > 0 && (allMatching || runs.every((r) => selected.has(r.id)));

/** The count, the head's box (ticked, part ticked or not) and the offer of the whole
 * filter follow the selection, as Compare and the commands do. */
function selectionChanged() {
  const count = allMatching ? total : selected.size;
  const head = $("select-page");
  head.checked = pageTicked();
  head.indeterminate = !head.checked && runs.some((r) => selected.has(r.id));
  head.disabled = !runs.length;
  for (const box of document.querySelectorAll("#runs input.pick")) {
    box.checked = allMatching || selected.has(box.closest("tr").dataset.id);
  }
  const those = filtered(state) ? " that match" : "";
  $("selection").textContent = allMatching
    ? `All ${total} runs${those} selected`
    : count
      ? `${count} selected` + (pageTicked() && total > runs.length ? `: all ${runs.length} on this page` : "")
      : "No runs selected";
  const offer = $("select-matching");
  offer.hidden = allMatching || !pageTicked() || total <= runs.length;
  offer.textContent = `Select all ${total} runs${those}`;
  $("clear-selection").hidden = count === 0;
  $("compare").disabled = count < 2;
  enableFleet(count > 0);
}

function clearSelection() {
  allMatching = false;
  selected.clear();
  selectionChanged();
}

/** Compare the ticked runs by id; a whole filter by the filter, short for any number. */
function compareUrl() {
  if (!allMatching) return `/compare?runs=${[...selected].map(encodeURIComponent).join(",")}`;
  const query = filterQuery(state).toString();
  return query ? `/compare?${query}` : "/compare";
}

function wire() {
  enableFleet = fleetControls($("fleet"), () => (allMatching ? { matching: total, filtered: filtered(state), targets: () => matchingTargets(state) } : [...selected]));
  selectionChanged();
  $("select-page").addEventListener("change", () => {
    const tick = $("select-page").checked;
    if (!tick) allMatching = false;
    for (const run of runs) tick ? selected.add(run.id) : selected.delete(run.id);
    selectionChanged();
  });
  $("select-matching").addEventListener("click", () => {
    allMatching = true;
    selected.clear(); // what it was ticked of goes: leaving the whole filter keeps the page only
    selectionChanged();
  });
  $("clear-selection").addEventListener("click", clearSelection);
  $("compare").addEventListener("click", () => {
    location.href = compareUrl();
  });
  $("project").addEventListener("change", () => change({ project: $("project").value }));
  $("status").addEventListener("change", () => change({ status: $("status").value }));
  let typing = null;
  $("q").value = state.q;
  $("q").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => change({ q: $("q").value.trim() }), 300);
  });
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.querySelector(".sort").addEventListener("click", () => {
      sortBy(state, th.dataset.sort);
      reload();
    });
  }
  $("metric").addEventListener("change", () => {
    state.metric = $("metric").value;
    if (state.metric) sortBy(state, "metric");
    else if (sortKey(state) === "metric") Object.assign(state, { sort: "started", order: "desc", page: 1 });
    reload();
  });
  $("prev").addEventListener("click", () => {
    state.page -= 1;
    reload();
  });
  $("next").addEventListener("click", () => {
    state.page += 1;
    reload();
  });
}

async function main() {
  if (state.project) projects.add(state.project);
  if (state.metric) metrics.add(state.metric);
  wire();
  // Read the first page once the stream is open: no run made in between is missed.
  const opened = stream({ list: true }, {
    ready: () => {}, // the stream's first event
    run: (run) => {
      if (showRun(run)) {
        // It may have left the filters, or moved in the order.
        if (!matches(state, run) || sortKey(state) !== "started") readSoon();
        return;
      }
      remember([run]);
      const onFirstPage = runs.length < PAGE_SIZE || run.created_at >= runs.at(-1).created_at;
      if (newestFirst(state) && matches(state, run) && onFirstPage) readSoon();
    },
    deleted: ({ id }) => {
      selected.delete(id);
      selectionChanged();
      if (!runs.some((r) => r.id === id)) return;
      runs = runs.filter((r) => r.id !== id);
      [...$("runs").children].find((tr) => tr.dataset.id === id)?.remove();
      readSoon(); // the count, and the next page's first run moves up
    },
    resync: readSoon, // some changes are lost to this page: read it again
  });
  await opened;
  await load();
  document.body.dataset.ready = "true";
  setInterval(() => {
    const byId = new Map(runs.map((r) => [r.id, r]));
    for (const tr of $("runs").children) {
      const run = byId.get(tr.dataset.id);
      if (run?.status === "running") tr.querySelector(".duration").textContent = fmtDuration(runSeconds(run));
    }
  }, 1000);
}

main().catch(showError);
