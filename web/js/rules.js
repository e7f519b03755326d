// The rules page: list, create and delete rules; each rule's firings, counted live from
// the `rule` events of the run-list stream.

import { api, ApiError, num, stream } from "./api.js";
import { el, fmtDate, fmtValue, showError } from "./util.js";

const $ = (id) => document.getElementById(id);
const rules = new Map(); // id -> rule
const open = new Map(); // id -> firings shown under the rule's row

function target(rule) {
  if (rule.run_id) return el("a", { href: `/runs/${encodeURIComponent(rule.run_id)}`, text: `run ${rule.run_id}` });
  return rule.project ? `project ${rule.project}` : "every run";
}

function webhook(rule) {
  if (!rule.notify) return "";
  if (rule.notify_error) return el("span", { className: "rule-error", text: `failed ${fmtDate(rule.notify_error_at)}: ${rule.notify_error}` });
  return rule.notified_at ? `sent ${fmtDate(rule.notified_at)}` : "none sent yet";
}

/** Firings past the rule's bound, which issued nothing: counted, never hidden. */
function suppressed(rule) {
  if (!rule.suppressed) return [];
  return [" ", el("span", { className: "muted suppressed", title: `past max_firings ${rule.max_firings} for a run`, text: `+${rule.suppressed} suppressed` })];
}

function firingRows(rule) {
  const list = open.get(rule.id);
  if (!list) return [];
  const rows = list.map((f) =>
    el(
      "li",
      {},
      el("a", { href: `/runs/${encodeURIComponent(f.run_id)}`, text: f.run_id }),
      ` ${f.suppressed ? "from step" : "step"} ${f.step}, ${f.name} = ${fmtValue(typeof f.value === "string" ? f.value : num(f.value))}, `,
      f.command_id === null ? f.message || "notified" : `command ${f.command_id}`,
      `, ${fmtDate(f.created_at)}`,
    ),
  );
  const shown = rows.length ? el("ul", {}, ...rows) : el("span", { className: "muted", text: "It has not fired yet." });
  return [el("tr", { className: "firings-of", "data-rule": String(rule.id) }, el("td", { colspan: "7" }, shown))];
}

function render() {
  const list = [...rules.values()].sort((a, b) => a.id - b.id);
  $("rules").replaceChildren(
    ...list.flatMap((rule) => [
      el(
        "tr",
        { "data-id": String(rule.id) },
        el("td", { text: String(rule.id) }),
        el("td", {}, target(rule)),
        el("td", { text: `${rule.description} (${rule.once_per_run ? "once per run" : `at most ${rule.max_firings} a run`})` }),
        el("td", {}, el("button", { type: "button", className: "small fired-count", onclick: () => toggle(rule.id), text: `${rule.firings}×` }), suppressed(rule)),
        el("td", {}, webhook(rule)),
        el("td", { text: fmtDate(rule.created_at) }),
        el("td", {}, el("button", { type: "button", className: "small", onclick: () => remove(rule), text: "Delete" })),
      ),
      ...firingRows(rule),
    ]),
  );
  $("no-rules").hidden = list.length > 0;
}

async function load() {
  rules.clear();
  for (const rule of await api("/api/v1/rules")) rules.set(rule.id, rule);
  render();
}

async function toggle(id) {
  if (open.has(id)) open.delete(id);
  else open.set(id, await api(`/api/v1/rules/${id}/firings`));
  render();
}

async function remove(rule) {
  if (!window.confirm(`Delete rule ${rule.id}: ${rule.description}? Its firings go with it.`)) return;
  try {
    await api(`/api/v1/rules/${rule.id}`, { method: "DELETE" });
    rules.delete(rule.id);
    open.delete(rule.id);
    render();
  } catch (error) {
    showError(error);
  }
}

const isNumber = (text) => text.trim() !== "" && Number.isFinite(Number(text));
const number = (input) => Number(input.value);

/** What each field takes, in words: said beside the field when the page or the server
 * finds it wrong. */
const TAKES = {
  "target-value": () => ($("target").value === "run" ? "a run id is 1 to 64 letters, digits, _ . or -" : "a project name is 1 to 200 characters"),
  value: () => "a threshold is a number",
  patience: () => "patience is a whole number of points, from 1 to 1,000,000",
  then: () => "choose a command, or notify the webhook, or both",
  "then-value": () =>
    ({
      lr_factor: "a factor is a number above 0",
      set_lr: "a learning rate is a number above 0",
      action: "name the action to run",
      checkpoint: "a checkpoint name is 1 to 64 letters, digits, _ . or -",
    })[$("then").value],
};

/** What the page checks before it sends, for the fields shown; the server checks the rest. */
const CHECKS = {
  "target-value": (text) => text.trim() !== "",
  value: isNumber,
  patience: (text) => isNumber(text) && Number.isInteger(Number(text)) && Number(text) >= 1 && Number(text) <= 1_000_000,
  then: (text) => text !== "" || $("notify").checked,
  "then-value": (text) => {
    const then = $("then").value;
    if (then === "lr_factor" || then === "set_lr") return isNumber(text) && Number(text) > 0;
    return then !== "action" || text.trim() !== "";
  },
};

/** Say beside field `id` what is wrong with it. */
function sayAt(id, message) {
  const input = $(id);
  let note = $(`${id}-error`);
  if (!note) {
    note = el("span", { id: `${id}-error`, className: "field-error" });
    (input.closest("label, .inline") || input).after(note);
  }
  note.textContent = message;
  note.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.setAttribute("aria-describedby", note.id);
}

function clearAt(id) {
  const note = $(`${id}-error`);
  if (!note) return;
  note.hidden = true;
  $(id).removeAttribute("aria-invalid");
}

function clearAll() {
  for (const id of Object.keys(TAKES)) clearAt(id);
  $("form-error").textContent = "";
}

/** Each shown field the page finds wrong, said beside it; true when there is none. */
function checked() {
  const wrong = Object.keys(CHECKS).filter((id) => !$(id).closest("[hidden]") && !CHECKS[id]($(id).value));
  for (const id of wrong) sayAt(id, TAKES[id]());
  return wrong.length === 0;
}

/** The form's field that a validation error's `loc` names, if any. */
function fieldAt(loc) {
  const [top, , key] = loc[0] === "body" ? loc.slice(1) : loc;
  if (top === "when") return { value: "value", patience: "patience" }[key];
  if (top === "then") return $("then-value").hidden ? "then" : "then-value";
  return { run_id: "target-value", project: "target-value" }[top];
}

/** A refusal beside the fields it names (in the page's words, or the server's own where it
 * wrote a sentence for one field); the rest above the button. */
function showRefusal(error) {
  if (!(error instanceof ApiError) || error.status !== 422) {
    $("form-error").textContent = error.message;
    return;
  }
  let detail = error.message;
  try {
    detail = JSON.parse(detail);
  } catch (_) {
    /* a sentence, as "then: why" */
  }
  const general = new Set();
  if (Array.isArray(detail)) {
    for (const { loc, msg } of detail) {
      const id = fieldAt(loc);
      if (id) sayAt(id, TAKES[id]());
      else general.add(msg.replace(/^Value error, /, ""));
    }
  } else {
    const [, key, why] = /^(\w+): (.+)$/s.exec(detail) || [];
    const id = key && fieldAt([key]);
    if (id) sayAt(id, why);
    else general.add(detail);
  }
  $("form-error").textContent = [...general].join("; ");
}

/** The form as a rule body. */
function body() {
  const when = { scope: $("scope").value, name: $("series").value.trim(), op: $("op").value };
  if (when.op === "above" || when.op === "below") when.value = number($("value"));
  if (when.op === "no_improvement") Object.assign(when, { patience: number($("patience")), mode: $("mode").value });
  const rule = { when, notify: $("notify").checked, once_per_run: $("once").checked };
  const kind = $("target").value;
  if (kind !== "all") rule[kind === "run" ? "run_id" : "project"] = $("target-value").value.trim();
  const then = $("then").value;
  const value = $("then-value").value.trim();
  if (then === "lr_factor") rule.then = { type: "set_lr", args: { factor: number($("then-value")) } };
  else if (then === "set_lr") rule.then = { type: "set_lr", args: { value: number($("then-value")) } };
  else if (then === "action") rule.then = { type: "action", args: { name: value } };
  else if (then === "checkpoint") rule.then = value ? { type: "checkpoint", args: { name: value } } : { type: "checkpoint" };
  else if (then) rule.then = { type: then };
  return rule;
}

function wireForm() {
  const sync = () => {
    $("target-value").hidden = $("target").value === "all";
    $("target-value").placeholder = $("target").value === "run" ? "run id" : "project";
    const op = $("op").value;
    $("value").hidden = op !== "above" && op !== "below";
    $("plateau").hidden = op !== "no_improvement";
    const then = $("then").value;
    const input = $("then-value");
    input.hidden = !["lr_factor", "set_lr", "action", "checkpoint"].includes(then);
    input.placeholder = { lr_factor: "0.5", set_lr: "0.001", action: "action name", checkpoint: "name (optional)" }[then] || "";
    clearAll(); // the fields shown changed
  };
  for (const id of ["target", "op", "then"]) $(id).addEventListener("change", sync);
  sync();
  const form = $("rule-form");
  form.addEventListener("input", (event) => clearAt(event.target.id === "notify" ? "then" : event.target.id));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearAll();
    if (!checked()) return;
    try {
      const rule = await api("/api/v1/rules", { method: "POST", body: body() });
      rules.set(rule.id, rule);
      render();
    } catch (error) {
      showRefusal(error);
    }
  });
}

async function onFiring(firing) {
  let rule = rules.get(firing.rule_id);
  if (!rule) return;
  // A run's count of suppressed firings grows on one row: the rule's total is read again.
  if (firing.suppressed) rules.set(rule.id, (rule = await api(`/api/v1/rules/${rule.id}`)));
  else rule.firings += 1;
  const list = open.get(rule.id);
  const shown = list ? list.findIndex((f) => f.id === firing.id) : -1;
  if (shown >= 0) list[shown] = firing;
  else list?.push(firing);
  render();
  document.querySelector(`tr[data-id="${rule.id}"]`)?.classList.add("fired");
}

async function main() {
  wireForm();
  stream({ list: true }, { rule: (firing) => onFiring(firing).catch(showError), resync: () => load().catch(showError) });
  await load();
  document.body.dataset.ready = "true";
}

main().catch(showError);
