// The API from the browser: JSON over fetch with the stored token, and Server-Sent Events.

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

/** Call the API; on 401 ask for the server's token once, keep it, and try again. */
export async function api(path, { method = "GET", body } = {}) {
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
    return response.status === 204 ? null : response.json();
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

/** Subscribe to an SSE stream: `handlers` maps event names to functions of the parsed data. */
export function stream(path, handlers, onState) {
  const source = new EventSource(withToken(path));
  for (const [name, handle] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => handle(JSON.parse(event.data)));
  }
  if (onState) {
    source.onopen = () => onState(true);
    source.onerror = () => onState(false);
  }
  return source;
}

const NAMED = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };

/** A value from the API as a number: non-finite values arrive as their names. */
export function num(value) {
  return typeof value === "string" ? NAMED[value] : value;
}

export function seriesUrl(runId, scope, name, params = {}) {
  const query = new URLSearchParams({ max_points: "2000", ...params });
  return `/api/v1/runs/${encodeURIComponent(runId)}/series/${scope}/${encodeURIComponent(name)}?${query}`;
}
