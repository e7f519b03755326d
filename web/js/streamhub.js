// One event stream for everything its subscribers follow. A browser holds at most six
// HTTP/1.1 connections to a server, so the tabs of one browser share one stream (the
// shared worker in streamworker.js runs a hub for all of them); where there is no shared
// worker, each page runs one for itself.
//
// A subscriber follows some runs, or the run list, and gets their events as a page's
// `stream()` knows them: `run`, `metrics`, `command`, `rule`, `deleted`, `resync`, and
// `ready` for the run list. When what the subscribers follow changes, a new stream
// opens, resuming after the last event the old one gave (`last_event_id`), and the old
// one closes once the new one has caught up (its `ready`). Event ids are `EPOCH-NUMBER`,
// the number increasing across runs: each subscriber keeps, per run, the number of the
// last event it got, so no event reaches it twice or is skipped in the switch. A run new
// to a subscriber starts with the stream's opening `run` event, which a page waits for.

export const MAX_RUNS = 100; // the server's limit for one stream
const LIST = "*"; // the run list's key among run ids (no run id holds a *)
const REOPEN_MS = 2000;
const LIST_PREFIX = "list.";

function number(id) {
  return Number(id.slice(id.indexOf("-") + 1));
}

function epoch(id) {
  return id.slice(0, id.indexOf("-"));
}

/** A subscriber: what it follows, and `send(message)` for `{event, data}` and `{state}`. */
class Subscriber {
  constructor({ runs = [], list = false }, send) {
    this.keys = [...new Set(runs)].slice(0, MAX_RUNS); // a page that shows more follows the first ones live
    if (list) this.keys.push(LIST);
    this.send = send;
    this.marks = new Map(); // key -> number of the last event sent: there once it started
  }

  get started() {
    return this.keys.every((key) => this.marks.has(key));
  }
}

export class Hub {
  constructor() {
    this.subscribers = new Set();
    this.token = null;
    this.current = null; // the stream that serves them
    this.next = null; // one opening for a new set, replacing `current` at its `ready`
    this.lastId = null; // of the last event of `current` handed on
    this.epoch = null;
    this.wait = REOPEN_MS;
    this.planned = false;
  }

  /** Follow `want` ({runs, list}); null where the hub is full (the page then opens its own stream). */
  add(want, send) {
    const subscriber = new Subscriber(want, send);
    const runs = new Set([...this.subscribers].flatMap((s) => s.keys).concat(subscriber.keys));
    runs.delete(LIST);
    if (runs.size > MAX_RUNS) return null;
    this.subscribers.add(subscriber);
    this.changed();
    return subscriber;
  }

  remove(subscriber) {
    if (this.subscribers.delete(subscriber)) this.changed();
  }

  setToken(token) {
    if (token === this.token) return;
    this.token = token;
    if (this.current?.closed) this.open(); // refused for want of it, maybe
  }

  wanted() {
    const keys = new Set([...this.subscribers].flatMap((s) => s.keys));
    const list = keys.delete(LIST);
    const runs = [...keys].sort();
    return { runs, list, key: `${runs.join(",")}|${list}` };
  }

  /** Open a stream for the new set once the current task ends (tabs that open together
   * change it once), or for a subscriber new to a stream that has given its opening. */
  changed() {
    if (this.planned) return;
    this.planned = true;
    setTimeout(() => {
      this.planned = false;
      const target = this.next ?? this.current;
      const waiting = [...this.subscribers].some((s) => !s.started);
      if (target?.key !== this.wanted().key || (target.caughtUp && waiting)) this.open();
    }, 0);
  }

  open() {
    this.next?.source.close();
    this.next = null;
    const want = this.wanted();
    if (!want.runs.length && !want.list) {
      this.current?.source.close();
      this.current = null;
      return;
    }
    const stream = this.connect(want);
    if (this.current?.caughtUp && !this.current.closed) {
      this.next = stream;
    } else {
      this.current?.source.close();
      this.current = stream;
    }
  }

  connect(want) {
    const query = new URLSearchParams();
    if (want.runs.length) query.set("runs", want.runs.join(","));
    if (want.list && want.runs.length) query.set("list", "true");
    if (this.lastId) query.set("last_event_id", this.lastId);
    if (this.token) query.set("access_token", this.token);
    const stream = { ...want, source: new EventSource(`/api/v1/events?${query}`), buffer: [], caughtUp: false, closed: false };
    const { source } = stream;
    for (const name of ["run", "metrics", "command", "rule", "deleted", "resync", "ready"]) {
      for (const prefix of want.runs.length && want.list ? ["", LIST_PREFIX] : [""]) {
        source.addEventListener(prefix + name, (event) => this.receive(stream, prefix + name, event));
      }
    }
    source.onopen = () => {
      stream.buffer = []; // after a reconnect, the opening comes again
      stream.ready = false;
    };
    source.onerror = () => {
      if (stream !== this.current && stream !== this.next) return;
      for (const s of this.subscribers) if (stream === this.current || !s.started) s.send({ state: "reconnecting" });
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an error answer while the server restarts): open again,
        // resuming after the last event handed on.
        stream.closed = true;
        setTimeout(() => {
          if (stream === this.current || stream === this.next) this.open();
        }, this.wait);
        this.wait = Math.min(this.wait * 2, 60_000);
      }
    };
    return stream;
  }

  receive(stream, name, event) {
    if (stream !== this.current && stream !== this.next) return;
    const item = { name, data: JSON.parse(event.data), id: event.lastEventId, stream };
    if (!stream.ready) {
      stream.buffer.push(item);
      if (name === "ready") this.caughtUp(stream);
      return;
    }
    this.deliver(item);
  }

  /** A stream's opening has come: what it missed (handed on where not had yet), then
   * each run as it is (the start for a subscriber new to it), then `ready`. */
  caughtUp(stream) {
    if (stream === this.next) {
      this.current.source.close();
      this.current = stream;
      this.next = null;
    }
    stream.ready = true;
    stream.caughtUp = true;
    this.wait = REOPEN_MS;
    const items = stream.buffer;
    stream.buffer = [];
    const opening = items.length - stream.runs.length - 1;
    items.forEach((item, i) => this.deliver(item, i >= opening));
    for (const s of this.subscribers) if (s.started) s.send({ state: "live" });
  }

  /** Hand an event to the subscribers that follow its run and have not had it. */
  deliver({ name, data, id, stream }, opening = false) {
    if (epoch(id) !== this.epoch) {
      // Another server process numbered it: the numbers had are not comparable.
      this.epoch = epoch(id);
      for (const s of this.subscribers) for (const key of s.marks.keys()) s.marks.set(key, -1);
    }
    this.lastId = id;
    const n = number(id);
    const listed = !stream.runs.length || name.startsWith(LIST_PREFIX);
    const event = listed ? name.replace(LIST_PREFIX, "") : name;
    const key = listed || name === "ready" ? LIST : data.run_id; // `ready`: the run list's opening
    for (const s of this.subscribers) {
      if (key === undefined) {
        if (s.started) s.send({ event, data }); // a resync of everything
      } else if (!s.keys.includes(key)) {
        continue;
      } else if (opening && (!s.marks.has(key) || n > s.marks.get(key))) {
        // Its state now: not where a subscriber has had later events, it would take it back.
        s.send({ event, data });
        s.marks.set(key, n);
      } else if (!opening && s.marks.has(key) && n > s.marks.get(key)) {
        s.send({ event, data });
        s.marks.set(key, n);
      }
    }
  }
}
