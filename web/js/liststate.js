// What the run list shows (filters, sort, page), kept in the page's URL so that a reload
// or a shared link shows the same, and turned into the API's query.

export const PAGE_SIZE = 50;
// The order a column sorts in first: newest first, names and statuses A to Z.
const FIRST_ORDER = { started: "desc", name: "asc", status: "asc", metric: "desc" };

/** The state the URL holds; absent keys are the defaults. */
export function fromUrl() {
  const query = new URLSearchParams(location.search);
  const sort = query.get("sort") || "started";
  const page = Number(query.get("page"));
  return {
    project: query.get("project") || "",
    status: query.get("status") || "",
    q: query.get("q") || "",
    tags: query.getAll("tag"),
    sort,
    order: query.get("order") === "asc" ? "asc" : "desc",
    metric: sort.startsWith("metric:") ? sort.slice(7) : query.get("metric") || "",
    page: Number.isInteger(page) && page > 1 ? page : 1,
  };
}

/** The filters as `GET /api/v1/runs` (and `/compare`) take them. */
export function filterQuery(state) {
  const query = new URLSearchParams();
  for (const key of ["project", "status", "q"]) if (state[key]) query.set(key, state[key]);
  for (const tag of state.tags) query.append("tag", tag);
  return query;
}

/** Whether any filter is set. */
export const filtered = (state) => filterQuery(state).toString() !== "";

function params(state) {
  const query = filterQuery(state);
  if (state.sort !== "started") query.set("sort", state.sort);
  if (state.order !== "desc") query.set("order", state.order);
  return query;
}

export function toUrl(state) {
  const query = params(state);
  if (state.metric && state.sort !== `metric:${state.metric}`) query.set("metric", state.metric);
  if (state.page > 1) query.set("page", String(state.page));
  const search = query.toString();
  history.replaceState(null, "", search ? `?${search}` : location.pathname);
}

export function apiPath(state) {
  const query = params(state);
  query.set("limit", String(PAGE_SIZE));
  query.set("offset", String((state.page - 1) * PAGE_SIZE));
  return `/api/v1/runs?${query}`;
}

/** Sort by `key` (started, name, status, metric); again by the same key flips the order. */
export function sortBy(state, key) {
  const sort = key === "metric" ? `metric:${state.metric}` : key;
  if (state.sort === sort) state.order = state.order === "asc" ? "desc" : "asc";
  else Object.assign(state, { sort, order: FIRST_ORDER[key] });
  state.page = 1;
}

/** The column the list is sorted by, as `sortBy` names it. */
export const sortKey = (state) => (state.sort.startsWith("metric:") ? "metric" : state.sort);

/** Whether the run passes the filters (as the server judges them). */
export function matches(state, run) {
  const q = state.q.toLowerCase();
  return (
    (!state.project || run.project === state.project) &&
    (!state.status || run.status === state.status) &&
    (!q || run.name.toLowerCase().includes(q) || run.id.toLowerCase().includes(q)) &&
    state.tags.every((tag) => run.tags.includes(tag))
  );
}

/** Whether a new run sorts onto the first page: the page asks again when one may have. */
export const newestFirst = (state) => state.page === 1 && state.sort === "started" && state.order === "desc";
