// The orbridge protocol (docs/protocol.md) for the browser: one module every console uses.
// A thin layer over socket.io-client: connect with a join token, requests with acks,
// server events, and a participant list kept in step with presence events.

import { io } from "../vendor/socket.io-client/socket.io.esm.min.js";

/**
 * @typedef {"good" | "fair" | "poor" | "unknown"} Quality
 *
 * @typedef {object} Participant
 * @property {string} identity
 * @property {string} name
 * @property {string} role
 * @property {string[]} grants
 * @property {string} node
 * @property {string} state
 * @property {string} transport
 * @property {Quality} quality
 * @property {number} joined_at  milliseconds since the epoch, server clock
 * @property {Record<string, string>} attributes
 *
 * @typedef {object} Snapshot  the `join` / `snapshot` ack data
 * @property {string} room
 * @property {string} node
 * @property {Participant} self
 * @property {Participant[]} participants  everyone, the joiner included, in join order
 * @property {number} server_time
 *
 * @typedef {object} JoinPayload
 * @property {Quality} [quality]
 * @property {Record<string, string>} [attributes]
 *
 * @typedef {"connecting" | "connected" | "joined" | "reconnecting" | "closed"} ConnectionState
 *
 * @typedef {object} ConnectOptions
 * @property {string} token  the join token (from the URL fragment: see tokenFromLocation)
 * @property {string} [room]  the room this client means to enter; refused if the token's differs
 * @property {number} [requestTimeout]  milliseconds to wait for each ack (default 10000)
 * @property {number} [connectTimeout]  milliseconds to wait for the connection (default 10000)
 * @property {string[]} [transports]  default ["websocket"]
 * @property {boolean} [reconnect]  reconnect after a lost link, and join again (default true)
 */

/** Events the server pushes (no ack). */
export const SERVER_EVENTS = Object.freeze([
  "participant_joined",
  "participant_left",
  "participant_updated",
  "removed",
  "server_shutdown",
  "consultation_ended",
]);

/** Events that change the participant list. */
const PRESENCE_EVENTS = ["participant_joined", "participant_left", "participant_updated"];

/**
 * A refused connection (`connect_error`) or an `{ok: false, error}` ack.
 * `code` is the protocol's error code (e.g. "token_expired", "forbidden"), or one of
 * "timeout", "not_connected", "connect_failed", "bad_ack" raised on this side.
 */
export class ProtocolError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "ProtocolError";
    /** @type {string} */
    this.code = code;
  }
}

/**
 * Who is in the room: the join snapshot, kept up to date by presence events.
 * Ordered like the server's list: by join time, then identity.
 */
export class ParticipantList {
  constructor() {
    /** @type {Map<string, Participant>} */
    this._byIdentity = new Map();
    /** @type {Set<(list: ParticipantList) => void>} */
    this._listeners = new Set();
  }

  /**
   * Replace everything with a snapshot's participants.
   * @param {Participant[]} participants
   */
  reset(participants) {
    this._byIdentity.clear();
    for (const p of participants) this._byIdentity.set(p.identity, p);
    this._changed();
  }

  /**
   * Apply a server event. Returns true if it was a presence event.
   * @param {string} event
   * @param {any} payload
   * @returns {boolean}
   */
  apply(event, payload) {
    switch (event) {
      case "participant_joined":
      case "participant_updated":
        if (payload && payload.participant) this.upsert(payload.participant);
        return true;
      case "participant_left":
        if (payload && typeof payload.identity === "string") this.remove(payload.identity);
        return true;
      default:
        return false;
    }
  }

  /** @param {Participant} participant  added, or replacing the entry with its identity */
  upsert(participant) {
    this._byIdentity.set(participant.identity, participant);
    this._changed();
  }

  /** @param {string} identity */
  remove(identity) {
    if (this._byIdentity.delete(identity)) this._changed();
  }

  clear() {
    if (this._byIdentity.size === 0) return;
    this._byIdentity.clear();
    this._changed();
  }

  /**
   * @param {string} identity
   * @returns {Participant | undefined}
   */
  get(identity) {
    return this._byIdentity.get(identity);
  }

  get size() {
    return this._byIdentity.size;
  }

  /** @returns {Participant[]} in join order */
  list() {
    return [...this._byIdentity.values()].sort(
      (a, b) =>
        (a.joined_at || 0) - (b.joined_at || 0) ||
        (a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0),
    );
  }

  /**
   * Call `listener` after every change. Returns a function that unsubscribes.
   * @param {(list: ParticipantList) => void} listener
   * @returns {() => void}
   */
  onChange(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  _changed() {
    for (const listener of this._listeners) {
      try {
        listener(this);
      } catch (err) {
        console.error("participant list listener failed", err);
      }
    }
  }
}

/**
 * One connection to an orbridge server. Create it with `connect()`.
 */
export class RoomConnection {
  /**
   * @param {any} socket  a socket.io-client Socket (not yet connected)
   * @param {number} requestTimeout
   * @param {boolean} rejoin
   */
  constructor(socket, requestTimeout, rejoin) {
    this.socket = socket;
    this.requestTimeout = requestTimeout;
    this.rejoin = rejoin;
    /** @type {Snapshot | null} the latest join or snapshot answer */
    this.snapshot = null;
    /** @type {ParticipantList} */
    this.participants = new ParticipantList();
    /** @type {ConnectionState} */
    this.state = "connecting";
    /** @type {JoinPayload | null} what we joined with, to join again after a reconnect */
    this._joinPayload = null;
    /** @type {Array<[string, any]> | null} presence events that arrive while a join is pending */
    this._pending = null;
    /** @type {Set<(state: ConnectionState, detail: {reason?: string, error?: ProtocolError}) => void>} */
    this._stateListeners = new Set();
    this._wasConnected = false;
    this._serverStopping = false;
    /** @type {ReturnType<typeof setTimeout> | null} the next silent token refresh */
    this._refreshTimer = null;
    /** @type {Set<(token: string) => void>} */
    this._tokenListeners = new Set();

    for (const event of PRESENCE_EVENTS) {
      // Registered before any `on()` subscriber: the list is current when they run.
      socket.on(event, (/** @type {any} */ payload) => this._presence(event, payload));
    }
    socket.on("removed", () => {
      this._joinPayload = null; // the server closes this connection: never join again
    });
    socket.on("server_shutdown", () => {
      this._serverStopping = true;
    });
    socket.on("connect", () => this._onConnect());
    socket.on("disconnect", (/** @type {string} */ reason) => this._onDisconnect(reason));
    socket.on("connect_error", (/** @type {any} */ err) => {
      if (this._wasConnected && !socket.active) {
        // Refused on a reconnect (say, the token expired meanwhile): no more attempts.
        this._setState("closed", { error: refusal(err) });
      }
    });
  }

  /** The identity of this client once joined. */
  get self() {
    return this.snapshot ? this.snapshot.self : null;
  }

  /**
   * Send `event` with an acknowledgement; resolve with the ack's `data`, or reject with a
   * ProtocolError carrying the error's `code`.
   * @param {string} event
   * @param {object} [payload]  omitted for events whose payload is empty
   * @returns {Promise<any>}
   */
  async request(event, payload) {
    if (!this.socket.connected) {
      throw new ProtocolError("not_connected", `not connected; cannot send ${event}`);
    }
    const timed = this.socket.timeout(this.requestTimeout);
    let answer;
    try {
      answer =
        payload === undefined ? await timed.emitWithAck(event) : await timed.emitWithAck(event, payload);
    } catch (err) {
      throw new ProtocolError("timeout", `no answer to ${event} within ${this.requestTimeout} ms`);
    }
    if (!answer || typeof answer !== "object" || !("ok" in answer)) {
      throw new ProtocolError("bad_ack", `unexpected answer to ${event}`);
    }
    if (!answer.ok) {
      const error = answer.error || {};
      throw new ProtocolError(String(error.code), String(error.message));
    }
    return answer.data;
  }

  /**
   * Enter the room; store and return the snapshot, and fill `participants` from it.
   * @param {JoinPayload} [payload]
   * @returns {Promise<Snapshot>}
   */
  async join(payload = {}) {
    this._pending = [];
    try {
      const snapshot = await this.request("join", payload);
      this._joinPayload = payload;
      this._applySnapshot(snapshot);
      this._setState("joined", {});
      // At once: the session then holds a token of its own (a copy of the join link cannot
      // take its place), and again before each expiry, so a reconnect always succeeds.
      this._refreshIn(0);
      return snapshot;
    } finally {
      this._flushPending();
    }
  }

  /**
   * Ask for a fresh snapshot (to resynchronise after a gap).
   * @returns {Promise<Snapshot>}
   */
  async refresh() {
    this._pending = [];
    try {
      const snapshot = await this.request("snapshot");
      this._applySnapshot(snapshot);
      return snapshot;
    } finally {
      this._flushPending();
    }
  }

  /**
   * Change what others see of you.
   * @param {{name?: string, quality?: Quality, attributes?: Record<string, string>}} fields
   * @returns {Promise<Participant>}
   */
  async update(fields) {
    const data = await this.request("update", fields);
    if (this._joinPayload) {
      if (fields.quality) this._joinPayload = { ...this._joinPayload, quality: fields.quality };
      if (fields.attributes) this._joinPayload = { ...this._joinPayload, attributes: fields.attributes };
    }
    return data.participant;
  }

  /** Leave the room, keeping the connection (you may join again). */
  async leave() {
    this._joinPayload = null;
    await this.request("leave");
    this.snapshot = null;
    this.participants.clear();
    this._setState("connected", {});
  }

  /**
   * Subscribe to a server event. Returns a function that unsubscribes.
   * @param {string} event  one of SERVER_EVENTS (or a capability's event)
   * @param {(payload: any) => void} handler
   * @returns {() => void}
   */
  on(event, handler) {
    this.socket.on(event, handler);
    return () => this.socket.off(event, handler);
  }

  /**
   * Follow the connection's state. Returns a function that unsubscribes.
   * @param {(state: ConnectionState, detail: {reason?: string, error?: ProtocolError}) => void} listener
   * @returns {() => void}
   */
  onState(listener) {
    this._stateListeners.add(listener);
    return () => this._stateListeners.delete(listener);
  }

  /** Close the connection for good. */
  close() {
    this._joinPayload = null;
    this._refreshIn(null);
    this.socket.disconnect();
  }

  /** The token this connection (re)connects with: the latest the server handed it. */
  get token() {
    return this.socket.auth.token;
  }

  /**
   * Be told of every fresh token (to keep it for a reload). Returns an unsubscribe function.
   * @param {(token: string) => void} listener
   * @returns {() => void}
   */
  onToken(listener) {
    this._tokenListeners.add(listener);
    return () => this._tokenListeners.delete(listener);
  }

  /**
   * Ask the server for a fresh token now (`refresh_token`) and use it from now on.
   * @returns {Promise<{token: string, expires_at: number, server_time: number}>}
   */
  async refreshToken() {
    const data = await this.request("refresh_token");
    this.socket.auth.token = data.token;
    for (const listener of this._tokenListeners) {
      try {
        listener(data.token);
      } catch (err) {
        console.error("token listener failed", err);
      }
    }
    return data;
  }

  // internals -------------------------------------------------------------------------------
  /** @param {number | null} delayMs  null: no more refreshes */
  _refreshIn(delayMs) {
    if (this._refreshTimer !== null) clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (delayMs === null) return;
    this._refreshTimer = setTimeout(() => this._refreshNow(), delayMs);
  }

  async _refreshNow() {
    this._refreshTimer = null;
    if (!this.socket.connected || !this._joinPayload) return; // the next join refreshes
    try {
      const data = await this.refreshToken();
      // Half of what is left (the server's clock on both sides), at least 5 s.
      const left = data.expires_at * 1000 - data.server_time;
      this._refreshIn(Math.min(Math.max(left / 2, 5000), 2 ** 31 - 1));
    } catch (err) {
      const code = asProtocolError(err).code;
      if (code === "banned" || code === "token_revoked" || code === "token_expired") return;
      this._refreshIn(10000); // a timeout or a blip: try again soon
    }
  }

  /** @param {Snapshot} snapshot */
  _applySnapshot(snapshot) {
    this.snapshot = snapshot;
    this.participants.reset(snapshot.participants || []);
  }

  /**
   * @param {string} event
   * @param {any} payload
   */
  _presence(event, payload) {
    if (this._pending) this._pending.push([event, payload]);
    else if (this.snapshot) this.participants.apply(event, payload);
  }

  _flushPending() {
    const pending = this._pending || [];
    this._pending = null;
    if (!this.snapshot) return;
    // Events that crossed the join in flight: upserts are idempotent and a departure after
    // the snapshot was taken must still remove its participant.
    for (const [event, payload] of pending) this.participants.apply(event, payload);
  }

  _onConnect() {
    const again = this._wasConnected;
    this._wasConnected = true;
    this._setState("connected", {});
    if (again && this.rejoin && this._joinPayload) {
      this.join(this._joinPayload).catch((err) => {
        this._setState("closed", { error: asProtocolError(err) });
        this.socket.disconnect();
      });
    }
  }

  /** @param {string} reason */
  _onDisconnect(reason) {
    if (reason === "io server disconnect" && this._serverStopping && this.rejoin && this._joinPayload) {
      // The node is stopping (server_shutdown): it closed us on purpose, so socket.io will not
      // retry by itself. Come back (to another node, if clustered) once it is up again.
      this._serverStopping = false;
      this._setState("reconnecting", { reason: "server_shutdown" });
      const delay = 500 + Math.random() * 1000;
      setTimeout(() => {
        if (this._joinPayload && !this.socket.connected) this.socket.connect();
      }, delay);
      return;
    }
    this._setState(this.socket.active ? "reconnecting" : "closed", { reason });
  }

  /**
   * @param {ConnectionState} state
   * @param {{reason?: string, error?: ProtocolError}} detail
   */
  _setState(state, detail) {
    this.state = state;
    for (const listener of this._stateListeners) {
      try {
        listener(state, detail);
      } catch (err) {
        console.error("connection state listener failed", err);
      }
    }
  }
}

/**
 * @param {any} err
 * @returns {ProtocolError}
 */
function asProtocolError(err) {
  return err instanceof ProtocolError ? err : new ProtocolError("internal_error", String(err));
}

/**
 * The `{code, message}` of a refused connection (`connect_error`'s `data`).
 * @param {any} err
 * @returns {ProtocolError}
 */
function refusal(err) {
  const data = err && err.data;
  if (data && typeof data === "object" && typeof data.code === "string") {
    return new ProtocolError(data.code, String(data.message || err.message));
  }
  return new ProtocolError("connect_failed", `cannot reach the server: ${(err && err.message) || err}`);
}

/**
 * Connect to an orbridge server with a join token.
 * Resolves once connected; rejects with a ProtocolError whose `code` is the server's
 * refusal (`token_expired`, `token_invalid`, `token_missing`, `token_wrong_room`), or
 * `connect_failed` when the server cannot be reached, or `timeout`.
 * @param {string} url  the server's base URL (e.g. location.origin)
 * @param {ConnectOptions} options
 * @returns {Promise<RoomConnection>}
 */
export function connect(url, options) {
  const {
    token,
    room,
    requestTimeout = 10000,
    connectTimeout = 10000,
    transports = ["websocket"],
    reconnect = true,
  } = options;
  /** @type {{token: string, room?: string}} */
  const auth = { token };
  if (room !== undefined && room !== null) auth.room = room;
  const socket = io(url, {
    auth,
    transports,
    autoConnect: false,
    reconnection: reconnect,
    timeout: connectTimeout,
  });
  const connection = new RoomConnection(socket, requestTimeout, reconnect);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      settle();
      socket.disconnect();
      reject(new ProtocolError("timeout", `no connection within ${connectTimeout} ms`));
    }, connectTimeout + 1000);
    const onConnect = () => {
      settle();
      resolve(connection);
    };
    const onError = (/** @type {any} */ err) => {
      settle();
      socket.disconnect(); // no retries in the background for a first connection
      connection._setState("closed", { error: refusal(err) });
      reject(refusal(err));
    };
    const settle = () => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    };
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
    socket.connect();
  });
}

/**
 * Read the join token from the URL fragment (`#token=...`), then take it out of the
 * address bar (history.replaceState) so that copying the address does not share it.
 * Other fragment parameters are kept.
 * @param {Location} [loc]
 * @param {History} [hist]
 * @returns {string | null}
 */
export function tokenFromLocation(loc = window.location, hist = window.history) {
  const hash = loc.hash.startsWith("#") ? loc.hash.slice(1) : loc.hash;
  if (!hash) return null;
  const params = new URLSearchParams(hash);
  const token = params.get("token");
  if (token === null) return null;
  params.delete("token");
  const rest = params.toString();
  hist.replaceState(hist.state, "", loc.pathname + loc.search + (rest ? `#${rest}` : ""));
  return token.trim() || null;
}

/**
 * A token from what a user pasted: a bare token, or a whole join link (`...#token=...`).
 * @param {string} text
 * @returns {string | null}
 */
export function tokenFromText(text) {
  const trimmed = text.trim();
  if (!trimmed) return null;
  const at = trimmed.indexOf("#");
  if (at >= 0) {
    const token = new URLSearchParams(trimmed.slice(at + 1)).get("token");
    return token ? token.trim() : null;
  }
  return trimmed;
}
