// Comet browser client: subscribe to channels over WebSocket, server-sent
// events or long-poll, falling back in that order; reconnect with backoff and
// resume every channel from its cursor, so nothing is lost or repeated
// (an explicit `reset` says when history was gone). The server may also
// subscribe the connection to channels, or disconnect the client for good.
// No dependencies.
// The wire contract is PROTOCOL.md in the Comet repository.

const TRANSPORTS = ["websocket", "sse", "poll"];

const DISCONNECTED = "disconnected by the server";

/**
 * What an `error: "disconnected"` (SSE event, poll answer) says; without a
 * `reconnect` field, `fallback` decides (the server's default is to stay away).
 */
function disconnectOf(m, fallback = false) {
  const reconnect = typeof m.reconnect === "boolean" ? m.reconnect : fallback;
  return { code: m.code ?? null, reason: m.message || DISCONNECTED, reconnect };
}

/** A tiny event emitter: `on` returns a function that removes the listener. */
class Emitter {
  constructor() {
    this._listeners = new Map();
  }
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }
  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }
  _emit(event, value) {
    for (const fn of this._listeners.get(event) ?? []) {
      try {
        fn(value);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}

/** An error the server (or the client) gave, with its wire code. */
export class CometError extends Error {
  constructor(code, message, details = {}) {
    super(message || code);
    this.name = "CometError";
    this.code = code;
    Object.assign(this, details);
  }
}

/** One channel the client keeps subscribed across reconnects. */
export class Subscription extends Emitter {
  constructor(client, channel, token) {
    super();
    this.client = client;
    this.channel = channel;
    this.token = token;
    this.ready = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.ready.catch(() => {});
  }
  /** Stop receiving this channel. */
  unsubscribe() {
    return this.client.unsubscribe(this.channel);
  }
}

function decodeBase64(text) {
  const bin = atob(text);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

function encodeBase64(bytes) {
  let bin = "";
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
  return btoa(bin);
}

function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/**
 * A connection to a Comet server. Messages of every subscribed channel
 * arrive in order, once, across drops, reconnects and transport changes.
 */
export class Comet extends Emitter {
  /**
   * @param {string} [url] the server's base URL (default: this page's origin)
   * @param {object} [options] see comet.d.ts
   */
  constructor(url, options = {}) {
    super();
    const base = new URL(url || globalThis.location?.href || "http://localhost/", globalThis.location?.href);
    this.url = base.origin + base.pathname.replace(/\/$/, "").replace(/\/comet$/, "");
    this.options = {
      transports: TRANSPORTS,
      minDelay: 250,
      maxDelay: 15000,
      openTimeout: 5000,
      pollTimeout: 25000,
      pauseWhenHidden: false,
      token: undefined,
      withCredentials: false,
    };
    for (const [key, value] of Object.entries(options)) if (value !== undefined) this.options[key] = value;
    for (const t of this.options.transports) {
      if (!TRANSPORTS.includes(t)) throw new CometError("bad-option", `unknown transport ${t}`);
    }
    this.state = "disconnected";
    this.transport = null;
    this._subs = new Map();
    this._serverSubs = new Set(); // channels the server subscribed this connection to
    this._cursors = new Map(); // channel -> the cursor after its last message
    this._streamCursor = null; // the last SSE id or poll cursor (all channels)
    this._next = 0; // index into options.transports
    this._attempt = 0; // failed attempts since the last connection
    this._conn = null;
    this._timer = null;
    this._stopped = true;
    this._onOnline = () => this._connectSoon(0);
    this._onOffline = () => this._drop("offline", true);
    this._onVisibility = () => {
      if (document.visibilityState === "hidden") this._pause();
      else if (this._paused) this.connect();
    };
  }

  /** Connect (subscribing does too). */
  connect() {
    this._stopped = false;
    this._paused = false;
    if (typeof addEventListener === "function") {
      addEventListener("online", this._onOnline);
      addEventListener("offline", this._onOffline);
      if (this.options.pauseWhenHidden && typeof document !== "undefined") {
        document.addEventListener("visibilitychange", this._onVisibility);
      }
    }
    if (!this._conn && !this._timer) this._open();
    return this;
  }

  /** Close and stay closed (cursors are kept: `connect()` resumes). */
  disconnect() {
    this._stop();
    this._drop("client", false);
  }

  /** Stop reconnecting, also when the browser comes back online or the page is shown. */
  _stop() {
    this._stopped = true;
    if (typeof removeEventListener === "function") {
      removeEventListener("online", this._onOnline);
      removeEventListener("offline", this._onOffline);
      if (typeof document !== "undefined") document.removeEventListener("visibilitychange", this._onVisibility);
    }
  }

  /**
   * Subscribe to `channel`, from `since` (a cursor) or from now on.
   * Connects unless the server closed the client (state "closed"): only
   * an explicit `connect()` goes back after that.
   * @returns {Subscription}
   */
  subscribe(channel, { token, since } = {}) {
    let sub = this._subs.get(channel);
    if (sub) return sub;
    sub = new Subscription(this, channel, token);
    this._subs.set(channel, sub);
    // A channel the server subscribed becomes the user's: it resumes from
    // its cursor and is resubscribed after a reconnect.
    this._serverSubs.delete(channel);
    if (since) this._cursors.set(channel, since);
    if (this._conn) this._conn.subscribe(sub);
    else if (this._stopped && this.state !== "closed") this.connect();
    return sub;
  }

  /** Unsubscribe from `channel`. Resolves once the server confirmed. */
  unsubscribe(channel) {
    if (!this._subs.delete(channel)) return Promise.resolve(false);
    this._cursors.delete(channel);
    return this._conn ? this._conn.unsubscribe(channel) : Promise.resolve(true);
  }

  /** The cursor after the last message received on `channel`. */
  cursor(channel) {
    return this._cursors.get(channel) ?? null;
  }

  /**
   * Publish to `channel` (WebSocket only; the server must let clients
   * publish there). Resolves with `{channel, cursor}` once accepted.
   */
  publish(channel, data) {
    const bytes = asBytes(data);
    const op = bytes ? { op: "publish", channel, data_b64: encodeBase64(bytes) } : { op: "publish", channel, data: String(data) };
    return this._request(op);
  }

  /** Send a custom frame to the handler's on-message (WebSocket only). */
  send(data) {
    if (this.transport !== "websocket" || !this._conn) {
      throw new CometError("not-websocket", "custom frames need the WebSocket transport");
    }
    if (this._conn.ws.readyState !== 1) {
      throw new CometError("not-connected", "the WebSocket is still connecting: send once the state is connected");
    }
    const bytes = asBytes(data);
    this._conn.ws.send(bytes ?? JSON.stringify({ op: "message", data: String(data) }));
  }

  _request(op) {
    if (this.transport !== "websocket" || !this._conn) {
      return Promise.reject(new CometError("not-websocket", "publishing from a client needs the WebSocket transport"));
    }
    return this._conn.request(op);
  }

  _setState(state, details = {}) {
    this.state = state;
    const value = { state, transport: this.transport, ...details };
    this._emit("state", value);
    this._emit(state, value);
  }

  _open() {
    this._timer = null;
    if (this._stopped) return;
    const name = this.options.transports[this._next % this.options.transports.length];
    this.transport = name;
    this._setState("connecting");
    const make = { websocket: openWebSocket, sse: openSse, poll: openPoll }[name];
    this._conn = make(this);
  }

  /** The transport reached the server: reset the backoff. */
  _opened() {
    this._attempt = 0;
    this._restarting = false;
    this._setState("connected");
  }

  /**
   * The transport ended. `failedToOpen`: it never connected, so try the next
   * transport; `now`: the server asked for an immediate reconnect;
   * `disconnect`: the server disconnected the client on purpose
   * (`{code, reason, reconnect}`).
   */
  _closed(reason, { failedToOpen = false, now = false, disconnect = null } = {}) {
    const wasConnected = this.state === "connected";
    this._conn = null;
    this._endServerSubs();
    for (const sub of this._subs.values()) sub._live = false;
    if (this._stopped) {
      this._setState("disconnected", { reason });
      return;
    }
    if (disconnect) {
      // Not a failing transport: another one would be disconnected too, so
      // no fallback, and no fast restart either.
      const event = { ...disconnect, transport: this.transport };
      if (!disconnect.reconnect) {
        // The server says do not come back (close code 4500-4999): stay
        // stopped as after disconnect(), cursors kept for a later connect().
        this._stop();
        this._setState("closed", { reason, code: disconnect.code });
        this._emit("disconnect", event);
        return;
      }
      this._setState("disconnected", { reason, code: disconnect.code });
      this._emit("disconnect", event);
      return this._backoff();
    }
    this._setState("disconnected", { reason });
    if (failedToOpen) {
      this._next++;
      // A round of every transport failed: back off before the next one.
      if (this._next % this.options.transports.length !== 0) return this._connectSoon(0);
      this._next = 0;
    }
    if (now && wasConnected) {
      // The server restarts: it is back within seconds, so retry often
      // (without growing the delay) for a while.
      this._restarting = true;
      return this._connectSoon(Math.random() * 100);
    }
    this._backoff();
  }

  /** Reconnect after the next delay of the exponential backoff, jittered. */
  _backoff() {
    const { minDelay, maxDelay } = this.options;
    const steady = this._restarting && this._attempt < 40;
    const cap = steady ? minDelay : Math.min(maxDelay, minDelay * 2 ** this._attempt);
    this._attempt++;
    this._connectSoon(cap / 2 + (Math.random() * cap) / 2);
  }

  _connectSoon(delay) {
    if (this._stopped || this._paused || this._conn) return;
    clearTimeout(this._timer);
    this._setState("reconnecting", { delay: Math.round(delay) });
    this._timer = setTimeout(() => this._open(), delay);
  }

  _drop(reason, reconnect) {
    clearTimeout(this._timer);
    this._timer = null;
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close();
    this._endServerSubs();
    if (this.state !== "disconnected" && this.state !== "closed") this._setState("disconnected", { reason });
    if (reconnect && !this._stopped) this._connectSoon(this.options.maxDelay);
  }

  _pause() {
    this._paused = true;
    this._stopped = true;
    this._drop("hidden", false);
    this._stopped = false;
    for (const sub of this._subs.values()) sub._live = false;
  }

  // What every transport reports:

  _message(m, payload) {
    const sub = this._subs.get(m.channel);
    // A channel the server subscribed has no Subscription: its messages
    // only go to this object's `message` event.
    if (!sub && !this._serverSubs.has(m.channel)) return;
    if (m.cursor) this._cursors.set(m.channel, m.cursor);
    const data = payload ?? (m.data_b64 !== undefined ? decodeBase64(m.data_b64) : m.data);
    const message = { channel: m.channel, data, cursor: m.cursor, time: m.time };
    sub?._emit("message", message);
    this._emit("message", message);
  }

  _reset(r) {
    if (r.cursor) this._cursors.set(r.channel, r.cursor);
    const reset = { channel: r.channel, reason: r.reason, cursor: r.cursor };
    this._subs.get(r.channel)?._emit("reset", reset);
    this._emit("reset", reset);
  }

  _subscribed(channel, cursor) {
    const sub = this._subs.get(channel);
    if (!sub || sub._live) return;
    sub._live = true;
    if (cursor && !this._cursors.has(channel)) this._cursors.set(channel, cursor);
    sub._resolve(sub);
    sub._emit("subscribed", { channel, transport: this.transport });
  }

  /**
   * The server subscribed this connection to `channel` (its `subscribe`
   * command). That lasts for this connection only: it is not resubscribed
   * after a reconnect, so it stays out of `_subs`.
   */
  _serverSubscribed(channel, cursor) {
    if (!this._subs.has(channel) && !this._serverSubs.has(channel)) {
      this._serverSubs.add(channel);
      if (cursor) this._cursors.set(channel, cursor);
    }
    this._emit("subscribed", { channel, cursor: cursor ?? null });
  }

  /**
   * A server-side subscription ended: `server` true when the server
   * unsubscribed the channel, false when its connection ended.
   */
  _serverUnsubscribed(channel, server = true) {
    const cursor = this.cursor(channel);
    if (this._serverSubs.delete(channel)) this._cursors.delete(channel);
    else if (this._subs.has(channel)) {
      // The user's own Subscription stays: the next connection (or SSE
      // request) subscribes it again.
      this._subs.get(channel)._live = false;
    }
    this._emit("unsubscribed", { channel, cursor, server });
  }

  /** The connection ended, and with it what the server subscribed it to. */
  _endServerSubs() {
    for (const channel of [...this._serverSubs]) this._serverUnsubscribed(channel, false);
  }

  _denied(channel, error) {
    const sub = this._subs.get(channel);
    if (!sub) return;
    this._subs.delete(channel);
    sub._reject(error);
    sub._emit("error", error);
    this._emit("error", error);
  }

  /** `since` parameters for a stream: whole-stream cursor first, then each
   * channel's own (the server merges them; the last wins per channel). */
  _since() {
    const since = [];
    if (this._streamCursor) since.push(this._streamCursor);
    for (const channel of this._subs.keys()) {
      const c = this._cursors.get(channel);
      if (c) since.push(c);
    }
    return since;
  }

  _query(extra = {}) {
    const q = new URLSearchParams();
    let token = this.options.token;
    for (const sub of this._subs.values()) {
      q.append("channel", sub.channel);
      token ??= sub.token;
    }
    for (const c of this._since()) q.append("since", c);
    if (token) q.set("token", token);
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    return q.toString();
  }
}

function wsUrl(base) {
  return base.replace(/^http/, "ws") + "/comet/ws";
}

function openWebSocket(client) {
  const ws = new WebSocket(wsUrl(client.url));
  ws.binaryType = "arraybuffer";
  let opened = false;
  let ended = false;
  let nextId = 1;
  const pending = new Map(); // id -> {resolve, reject, channel}
  let binaryHeader = null; // a message whose payload is the next binary frame
  const timeout = setTimeout(() => {
    if (!opened) end("open timed out", { failedToOpen: true });
  }, client.options.openTimeout);

  // Operations asked for while the socket connects: sent once it is open
  // (a WebSocket cannot send before), failed if it never opens.
  const waiting = [];

  const conn = {
    ws,
    request(op) {
      if (!opened) {
        return new Promise((resolve, reject) => waiting.push({ op, resolve, reject }));
      }
      const id = nextId++;
      ws.send(JSON.stringify({ ...op, id }));
      return new Promise((resolve, reject) => pending.set(id, { resolve, reject, channel: op.channel }));
    },
    subscribe(sub) {
      // Until the socket opens, `onopen` subscribes every channel in `_subs`.
      if (!opened) return;
      const op = { op: "subscribe", channel: sub.channel };
      const since = client._cursors.get(sub.channel) ?? client._streamCursor;
      if (since) op.since = since;
      if (sub.token ?? client.options.token) op.token = sub.token ?? client.options.token;
      conn.request(op).then(
        (answer) => client._subscribed(answer.channel, answer.cursor),
        (error) => {
          if (error.code !== "disconnected") client._denied(sub.channel, error);
        },
      );
    },
    unsubscribe(channel) {
      // Not subscribed yet: `onopen` subscribes only what is still in `_subs`.
      if (!opened) return Promise.resolve(true);
      return conn.request({ op: "unsubscribe", channel }).then(
        () => true,
        () => false,
      );
    },
    close() {
      ended = true;
      clearTimeout(timeout);
      ws.close(1000);
      failPending();
    },
  };

  function failPending() {
    const closed = () => new CometError("disconnected", "the connection closed");
    for (const p of pending.values()) p.reject(closed());
    pending.clear();
    for (const w of waiting.splice(0)) w.reject(closed());
  }

  function end(reason, how) {
    if (ended) return;
    ended = true;
    clearTimeout(timeout);
    failPending();
    try {
      ws.close();
    } catch {}
    client._closed(reason, how);
  }

  ws.onopen = () => {
    opened = true;
    clearTimeout(timeout);
    client._opened();
    for (const sub of client._subs.values()) conn.subscribe(sub);
    for (const w of waiting.splice(0)) conn.request(w.op).then(w.resolve, w.reject);
  };
  ws.onmessage = (e) => {
    if (typeof e.data !== "string") {
      const bytes = new Uint8Array(e.data);
      if (binaryHeader) {
        const m = binaryHeader;
        binaryHeader = null;
        client._message(m, bytes);
      } else client._emit("frame", bytes);
      return;
    }
    let m;
    try {
      m = JSON.parse(e.data);
    } catch {
      return client._emit("frame", e.data);
    }
    const p = m && m.id !== undefined ? pending.get(m.id) : undefined;
    switch (m?.type) {
      case "message":
        if (m.binary) binaryHeader = m;
        else client._message(m);
        return;
      case "reset":
        return client._reset(m);
      case "subscribed":
      case "unsubscribed":
        // Sent by the server's own subscribe/unsubscribe commands ("id":null),
        // not an answer to an operation.
        if (m.server) {
          if (m.type === "subscribed") client._serverSubscribed(m.channel, m.cursor);
          else client._serverUnsubscribed(m.channel);
          return;
        }
      // falls through
      case "ack":
        if (p) {
          pending.delete(m.id);
          p.resolve(m);
        }
        return;
      case "error": {
        const error = new CometError(m.error, m.message, { channel: p?.channel, requestId: m.request_id });
        if (p) {
          pending.delete(m.id);
          p.reject(error);
        } else client._emit("error", error);
        return;
      }
      default:
        client._emit("frame", e.data);
    }
  };
  ws.onerror = () => {
    if (!opened) end("websocket failed to open", { failedToOpen: true });
  };
  ws.onclose = (e) => {
    const reason = e.reason || `websocket closed (${e.code})`;
    // 4000-4999 (but 4008, slow consumer): the server disconnected this
    // client; from 4500 on it must not come back.
    const disconnect =
      e.code >= 4000 && e.code <= 4999 && e.code !== 4008
        ? { code: e.code, reason: e.reason || DISCONNECTED, reconnect: e.code < 4500 }
        : null;
    // 1012: the server restarts; reconnect at once and resume.
    end(reason, { failedToOpen: !opened, now: e.code === 1012, disconnect });
  };
  return conn;
}

function openSse(client) {
  let ended = false;
  let opened = false;
  let source;
  const timeout = setTimeout(() => {
    if (!opened) end("open timed out", { failedToOpen: true });
  }, client.options.openTimeout);

  function start() {
    stop();
    source = new EventSource(`${client.url}/comet/sse?${client._query()}`, {
      withCredentials: client.options.withCredentials,
    });
    source.addEventListener("subscribed", (e) => {
      const m = JSON.parse(e.data);
      // The server subscribed this stream to one more channel: its cursor
      // is that channel's start, not the stream's.
      if (m.server) return client._serverSubscribed(m.channel, m.cursor);
      client._streamCursor = m.cursor;
      if (!opened) {
        opened = true;
        clearTimeout(timeout);
        client._opened();
      }
      for (const channel of client._subs.keys()) client._subscribed(channel, null);
    });
    source.addEventListener("message", (e) => {
      client._streamCursor = e.lastEventId || client._streamCursor;
      client._message(JSON.parse(e.data));
    });
    source.addEventListener("reset", (e) => {
      client._streamCursor = e.lastEventId || client._streamCursor;
      client._reset(JSON.parse(e.data));
    });
    source.addEventListener("unsubscribed", (e) => {
      client._serverUnsubscribed(JSON.parse(e.data).channel);
    });
    source.addEventListener("error", (e) => {
      if (e.data) {
        // The server ended the stream: slow-consumer, unavailable or
        // server-restart: reconnect (at once after a restart); disconnected:
        // as the server says. end() closes the EventSource before the
        // browser can retry by itself.
        const m = JSON.parse(e.data);
        if (m.error === "disconnected") return end(m.message || m.error, { disconnect: disconnectOf(m) });
        return end(m.message || m.error, { now: m.error === "server-restart" });
      }
      // The browser would retry by itself with Last-Event-ID; this client
      // retries with its own backoff and cursors instead.
      end(opened ? "stream closed" : "event stream failed to open", { failedToOpen: !opened });
    });
  }

  function end(reason, how) {
    if (ended) return;
    ended = true;
    clearTimeout(timeout);
    source?.close();
    client._closed(reason, how);
  }

  /** Close the request: a new one is a new connection, without what the server subscribed. */
  function stop() {
    if (!source) return;
    source.close();
    source = null;
    client._endServerSubs();
  }

  if (client._subs.size) start();
  else {
    // Nothing to subscribe to yet: connected, idle until a subscription.
    opened = true;
    clearTimeout(timeout);
    queueMicrotask(() => client._opened());
  }
  return {
    subscribe: () => start(),
    unsubscribe: () => {
      if (client._subs.size) start();
      else stop();
      return Promise.resolve(true);
    },
    close() {
      ended = true;
      clearTimeout(timeout);
      source?.close();
    },
  };
}

function openPoll(client) {
  let ended = false;
  let opened = false;
  let abort = null;
  let idle = null;

  async function loop() {
    while (!ended) {
      if (!client._subs.size) {
        if (!opened) {
          opened = true;
          client._opened();
        }
        await new Promise((resolve) => (idle = resolve));
        continue;
      }
      abort = new AbortController();
      const timer = setTimeout(() => abort.abort("open timed out"), opened ? client.options.pollTimeout + 10000 : client.options.openTimeout);
      let response, body;
      try {
        const timeout = opened ? client.options.pollTimeout : 0;
        response = await fetch(`${client.url}/comet/poll?${client._query({ timeout })}`, {
          signal: abort.signal,
          cache: "no-store",
          credentials: client.options.withCredentials ? "include" : "same-origin",
        });
        body = await response.json();
      } catch (e) {
        clearTimeout(timer);
        if (ended) return;
        if (abort.signal.aborted && abort.signal.reason === "restart") continue;
        return end(opened ? "poll failed" : "long-poll failed to open", { failedToOpen: !opened });
      }
      clearTimeout(timer);
      if (ended) return;
      if (!response.ok) {
        // 403 (stay away) or 503 (come back): the server disconnected this
        // client, whichever transport it would use.
        if (body.error === "disconnected") {
          return end(body.message || body.error, { disconnect: disconnectOf(body, response.status === 503) });
        }
        const error = new CometError(body.error, body.message);
        if (response.status === 403 || response.status === 400) {
          // A channel was refused: the whole request is (on SSE and poll).
          client._emit("error", error);
        }
        return end(body.message || body.error, { failedToOpen: !opened && response.status >= 500, now: body.error === "server-restart" });
      }
      if (!opened) {
        opened = true;
        client._opened();
      }
      for (const channel of client._subs.keys()) client._subscribed(channel, null);
      for (const r of body.resets ?? []) client._reset(r);
      for (const m of body.messages ?? []) client._message(m);
      client._streamCursor = body.cursor;
    }
  }

  function end(reason, how) {
    if (ended) return;
    ended = true;
    abort?.abort("closed");
    client._closed(reason, how);
  }

  function restart() {
    abort?.abort("restart");
    idle?.();
  }

  loop();
  return {
    subscribe: restart,
    unsubscribe: () => {
      restart();
      return Promise.resolve(true);
    },
    close() {
      ended = true;
      abort?.abort("closed");
      idle?.();
    },
  };
}

export default Comet;
