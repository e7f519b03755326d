// The run list: filters, live rows over SSE, and the selection to compare.

import { api, stream } from "./api.js";
import { fleetControls } from "./steer.js";
import { el, fmtDate, fmtDuration, fmtValue, runSeconds, showError, statusBadge } from "./util.js";

const $ = (id) => document.getElementById(id);
const runs = new Map(); // id -> run
const selected = new Set();
let enableFleet = () => {};

function visible(run) {
  const project = $("project").value;
  const status = $("status").value;
  return (!project || run.project === project) && (!status || run.status === status);
}

function latest(run) {
  const names = Object.keys(run.latest).sort((a, b) => (a.startsWith("val_") - b.startsWith("val_")) || a.localeCompare(b));
  return names.slice(0, 4).map((n) => `${n} ${fmtValue(run.latest[n])}`).join(" · ");
}

function row(run) {
  const box = el("input", { type: "checkbox", "aria-label": `select ${run.name}` });
  box.checked = selected.has(run.id);
  box.addEventListener("change", () => {
    box.checked ? selected.add(run.id) : selected.delete(run.id);
    $("compare").disabled = selected.size < 2;
    enableFleet(selected.size > 0);
  });
  return el(
    "tr",
    { "data-id": run.id, "data-status": run.status },
    el("td", {}, box),
    el("td", {}, el("a", { href: `/runs/${encodeURIComponent(run.id)}`, text: run.name })),
    el("td", { text: run.project }),
    el("td", {}, statusBadge(run.status)),
    el("td", { text: fmtDate(run.created_at) }),
    el("td", { className: "duration", text: fmtDuration(runSeconds(run)) }),
    el("td", { className: "latest", text: latest(run) }),
  );
}

function render() {
  const shown = [...runs.values()].filter(visible).sort((a, b) => b.created_at.localeCompare(a.created_at));
  $("runs").replaceChildren(...shown.map(row));
  $("empty").hidden = runs.size > 0;
  const projects = [...new Set([...runs.values()].map((r) => r.project))].sort();
  const select = $("project");
  const current = select.value;
  select.replaceChildren(el("option", { value: "", text: "all" }), ...projects.map((p) => el("option", { value: p, text: p })));
  select.value = projects.includes(current) ? current : "";
}

async function main() {
  enableFleet = fleetControls($("fleet"), () => [...selected]);
  enableFleet(false);
  $("project").addEventListener("change", render);
  $("status").addEventListener("change", render);
  $("compare").addEventListener("click", () => {
    location.href = `/compare?runs=${[...selected].map(encodeURIComponent).join(",")}`;
  });
  stream("/api/v1/events", {
    run: (run) => {
      runs.set(run.id, run);
      render();
    },
    deleted: ({ id }) => {
      runs.delete(id);
      selected.delete(id);
      enableFleet(selected.size > 0);
      render();
    },
  }, (live) => ($("live").hidden = !live));
  for (const run of await api("/api/v1/runs?limit=1000")) if (!runs.has(run.id)) runs.set(run.id, run);
  render();
  document.body.dataset.ready = "true";
  setInterval(() => {
    for (const tr of $("runs").children) {
      const run = runs.get(tr.dataset.id);
      if (run?.status === "running") tr.querySelector(".duration").textContent = fmtDuration(runSeconds(run));
    }
  }, 1000);
}

main().catch(showError);
