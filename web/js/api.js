// The API from the browser: JSON over fetch with the stored token, and Server-Sent Events.

import { Hub } from "./streamhub.js";

const TOKEN_KEY = "fitwatch.token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

function headers(method) {
  const h = {};
  // Every write is JSON, even without a body: the server refuses other writes.
  if (method !== "GET") h["Content-Type"] = "application/json";
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) h["Authorization"] = `Bearer ${token}`;
  return h;
}

/** The API's JSON answer (null for 204). */
export async function api(path, options = {}) {
  const response = await call(path, options);
  return response.status === 204 ? null : response.json();
}

/** A page of a list, with how many items match in all (the X-Total-Count header). */
export async function apiPage(path) {
  const response = await call(path);
  return { items: await response.json(), total: Number(response.headers.get("X-Total-Count")) };
}

/** Call the API; on 401 ask for the server's token once, keep it, and try again. */
async function call(path, { method = "GET", body } = {}) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(path, {
      method,
      headers: headers(method),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401 && attempt === 0) {
      const token = window.prompt("This fitwatch server needs its token (FITWATCH_TOKEN):");
      if (token) {
        localStorage.setItem(TOKEN_KEY, token.trim());
        for (const listener of tokenListeners) listener(token.trim());
        continue;
      }
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = (await response.json()).detail;
      } catch (_) {
        /* not JSON */
      }
      throw new ApiError(response.status, detail);
    }
    return response;
  }
}

/** The token this browser keeps for the server, if it needed one. */
export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

/** A URL the browser opens itself (a link, an EventSource): it cannot send headers, so a
 * server that protects reads takes the token in the URL. */
export function withToken(path) {
  const kept = token();
  return kept ? `${path}${path.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(kept)}` : path;
}

/** The run's records of one scope, as logged (the JSONL export). */
export async function records(runId, scope) {
  const response = await fetch(`/api/v1/runs/${encodeURIComponent(runId)}/export.jsonl?scope=${scope}`, { headers: headers("GET") });
  if (!response.ok) throw new ApiError(response.status, response.statusText);
  return (await response.text()).split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

const OPEN_WAIT_MS = 3000; // how long a page waits for its stream before it reads anyway
const WORKER = "/static/js/streamworker.js";
const tokenListeners = new Set();

/** Follow `want` ({runs: [ids], list: true for the run list}) live: `handlers` maps event
 * names to functions of the parsed data (each event of a run names it: `run_id`). Every
 * tab of this browser shares one stream through a shared worker (a browser holds six
 * connections to a server; a stream a page would take them all), or, where there is no
 * shared worker, the page opens one for all it follows. A stream that breaks resumes
 * where it was: the server sends what was missed, or `resync` where it cannot, which the
 * page answers by reading again. The header's `#live` says whether the page is live or
 * reconnecting. Returns a promise of the stream's first event for this page (the state
 * of each run, or `ready` for the run list), or of OPEN_WAIT_MS passing: a page that
 * reads after it misses no change made in between. */
export function stream(want, handlers) {
  let first;
  const opened = new Promise((resolve) => (first = resolve));
  const receive = (message) => {
    if (message.state) {
      connection(message.state);
    } else if (message.full) {
      here(); // the worker follows all it can: this page follows its runs itself
    } else {
      first();
      handlers[message.event]?.(message.data);
    }
  };
  const here = () => {
    const hub = new Hub();
    hub.setToken(token());
    tokenListeners.add((kept) => hub.setToken(kept));
    hub.add(want, receive);
  };
  if (typeof SharedWorker === "function") shared(want, receive, here);
  else here();
  return Promise.race([opened, new Promise((resolve) => setTimeout(resolve, OPEN_WAIT_MS))]);
}

function shared(want, receive, here) {
  let worker;
  try {
    worker = new SharedWorker(WORKER, { type: "module", name: "fitwatch events" });
  } catch (_) {
    here();
    return;
  }
  let heard = false;
  worker.addEventListener("error", () => heard || here()); // the worker would not start
  const { port } = worker;
  port.onmessage = ({ data }) => {
    heard = true;
    receive(data);
  };
  port.start();
  const send = (message) => port.postMessage({ token: token(), ...message });
  tokenListeners.add((kept) => port.postMessage({ token: kept }));
  window.addEventListener("storage", (event) => event.key === TOKEN_KEY && port.postMessage({ token: event.newValue }));
  // The worker lets go of what this page follows when it leaves (pagehide) or, where it
  // could not say so, when the lock it holds while it lives is released.
  const lock = `fitwatch.page.${crypto.randomUUID?.() ?? Math.random()}`;
  if (navigator.locks) {
    navigator.locks.request(lock, () => {
      send({ want, lock });
      return new Promise(() => {});
    });
  } else {
    send({ want });
  }
  window.addEventListener("pagehide", () => port.postMessage({ bye: true }));
  window.addEventListener("pageshow", (event) => event.persisted && location.reload()); // back from the cache: what it followed was let go
}

function connection(state) {
  const badge = document.getElementById("live");
  if (!badge) return;
  badge.hidden = false;
  badge.dataset.state = state;
  badge.textContent = state === "live" ? "live" : "reconnecting…";
}

const NAMED = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };

/** A value from the API as a number: non-finite values arrive as their names. */
export function num(value) {
  return typeof value === "string" ? NAMED[value] : value;
}

/** A chart's zoom (`Chart.onZoom`) as the series API's query for series `s`. */
export function stepParams(range, s) {
  if (!range) return {};
  const [since, until] = range(s);
  return { since_step: String(since), until_step: String(until) };
}

export function seriesUrl(runId, scope, name, params = {}) {
  const query = new URLSearchParams({ max_points: "2000", ...params });
  return `/api/v1/runs/${encodeURIComponent(runId)}/series/${scope}/${encodeURIComponent(name)}?${query}`;
}
