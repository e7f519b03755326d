// Every run that matches the run list's filter, as the targets of one command: the list
// shows a page of them, a command reaches them all.

import { apiPage } from "./api.js";
import { filterQuery } from "./liststate.js";
import { LIVE } from "./steer.js";

const READ = 1000; // runs a read: the most `GET /api/v1/runs` gives

/** The targets of `POST /api/v1/commands` for the runs that match `state`'s filters and
 * are still running (or paused): `{project}` where the filter is a project alone (the
 * server finds its live runs), else their ids, read a page at a time. */
export async function matchingTargets(state) {
  const query = filterQuery(state);
  if (state.project && query.toString() === new URLSearchParams({ project: state.project }).toString()) {
    return { project: state.project };
  }
  return { runs: await liveIds(query, state.status) };
}

/** The ids of the live runs that pass `query`: of its status if that is a live one. Read
 * oldest first, so a run made meanwhile comes after the pages read, not into them. */
async function liveIds(query, status) {
  const ids = new Set();
  for (const live of status ? LIVE.filter((s) => s === status) : LIVE) {
    query.set("status", live);
    query.set("sort", "started");
    query.set("order", "asc");
    query.set("limit", String(READ));
    for (let offset = 0; ; ) {
      query.set("offset", String(offset));
      const page = await apiPage(`/api/v1/runs?${query}`);
      for (const run of page.items) ids.add(run.id);
      offset += page.items.length;
      if (!page.items.length || offset >= page.total) break;
    }
  }
  return [...ids];
}
