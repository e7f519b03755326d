// DOM helpers. Everything that comes from data goes in as text, never as HTML.

/** An element with attributes and children; strings become text nodes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "className") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

export function statusBadge(status) {
  return el("span", { className: `badge status-${status}`, text: status });
}

export function fmtValue(value) {
  if (typeof value === "string") return value; // NaN, Infinity, -Infinity
  if (value === null || value === undefined) return "–";
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5)) return value.toExponential(3);
  return String(Number(value.toPrecision(4)));
}

export function fmtDate(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

/** A moment to the second: commands and firings a few seconds apart read apart. */
export function fmtTime(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
}

export function fmtDuration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

/** Seconds a run has lasted: until now while it trains (or is paused), else until its last change. */
export function runSeconds(run) {
  const end = run.status === "running" || run.status === "paused" ? Date.now() : Date.parse(run.updated_at);
  return (end - Date.parse(run.created_at)) / 1000;
}

/** Show `error` in the page's banner until the next success (`clearError`) or its Close. */
export function showError(error) {
  const box = document.getElementById("error");
  if (!box) return;
  const close = el("button", { type: "button", className: "close", "aria-label": "Close", title: "Close", text: "×", onclick: clearError });
  box.replaceChildren(el("span", { text: error instanceof Error ? error.message : String(error) }), close);
  box.hidden = false;
}

export function clearError() {
  const box = document.getElementById("error");
  if (box) box.hidden = true;
}

/** `items` in parts of `size`: what one request may carry of them. */
export const parts = (items, size) => Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size));
