// The shared worker that holds the one event stream of every fitwatch tab of this browser
// (see streamhub.js). A tab connects, says what it follows and its token, and holds a lock
// named for it while it lives: the worker drops what the tab followed when the tab says
// goodbye or, where it could not (it crashed), when its lock is let go.

import { Hub } from "./streamhub.js";

const hub = new Hub();

self.onconnect = ({ ports: [port] }) => {
  let subscriber = null;
  port.onmessage = ({ data }) => {
    if ("token" in data) hub.setToken(data.token);
    if (data.want && !subscriber) {
      subscriber = hub.add(data.want, (message) => port.postMessage(message));
      if (!subscriber) port.postMessage({ full: true });
      else if (data.lock && self.navigator.locks) self.navigator.locks.request(data.lock, () => hub.remove(subscriber));
    }
    if (data.bye && subscriber) hub.remove(subscriber);
  };
  port.start();
};
