// The room's annotation overlay as this page knows it: the kept annotations (snapshot
// `overlay`, then `annotation` and `annotation_removed` events) and the recent laser pointers.

import { POINTER_FADE_MS } from "./overlay.js";

/** @typedef {import("./overlay.js").Annotation} Annotation */
/** @typedef {import("./protocol.js").RoomConnection} RoomConnection */

/**
 * @typedef {object} LatencySample  one received annotation's delay from its author's send
 * @property {string} id
 * @property {string} type
 * @property {number} latency_ms  Date.now() on arrival minus the author's `sent_ms`
 * @property {number} arrived_perf  performance.now() on arrival
 * @property {number} arrived_ms  Date.now() on arrival
 */

const MAX_LATENCIES = 500;

export class AnnotationStore {
  constructor() {
    /** @type {Map<string, Annotation>} insertion order = oldest first */
    this._kept = new Map();
    /** @type {Map<string, {annotation: Annotation, at: number}>} latest pointer by author */
    this._pointers = new Map();
    /** @type {LatencySample[]} */
    this.latencies = [];
    /** @type {Set<() => void>} */
    this._listeners = new Set();
  }

  /**
   * Follow a connection's annotation events. Returns a function that unsubscribes.
   * @param {RoomConnection} connection
   * @returns {() => void}
   */
  follow(connection) {
    const offs = [
      connection.on("annotation", (/** @type {Annotation} */ a) => this.add(a)),
      connection.on("annotation_removed", (/** @type {{ids: string[]}} */ p) => this.remove(p && p.ids)),
    ];
    return () => offs.forEach((off) => off());
  }

  /**
   * Replace everything with a snapshot's overlay (oldest first).
   * @param {Annotation[] | undefined} overlay
   */
  reset(overlay) {
    this._kept.clear();
    this._pointers.clear();
    for (const a of overlay || []) if (a && a.id) this._kept.set(a.id, a);
    this._changed();
  }

  /** @param {Annotation} a  an `annotation` event */
  add(a) {
    if (!a || typeof a !== "object" || !Array.isArray(a.points)) return;
    if (typeof a.sent_ms === "number") {
      const now = Date.now();
      this.latencies.push({
        id: a.id,
        type: a.type,
        latency_ms: now - a.sent_ms,
        arrived_perf: performance.now(),
        arrived_ms: now,
      });
      if (this.latencies.length > MAX_LATENCIES) this.latencies.shift();
    }
    if (a.type === "pointer") {
      this._pointers.set(a.author || "", { annotation: a, at: performance.now() });
    } else {
      this._kept.set(a.id, a);
    }
    this._changed();
  }

  /** @param {string[] | undefined} ids */
  remove(ids) {
    let changed = false;
    for (const id of ids || []) changed = this._kept.delete(id) || changed;
    if (changed) this._changed();
  }

  /** @returns {Annotation[]} kept annotations, oldest first */
  kept() {
    return [...this._kept.values()];
  }

  /** @returns {{annotation: Annotation, at: number}[]} pointers not yet faded out */
  pointers() {
    const now = performance.now();
    for (const [author, p] of this._pointers) if (now - p.at > POINTER_FADE_MS) this._pointers.delete(author);
    return [...this._pointers.values()];
  }

  /**
   * Call `listener` after every change. Returns a function that unsubscribes.
   * @param {() => void} listener
   * @returns {() => void}
   */
  onChange(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  _changed() {
    for (const listener of this._listeners) {
      try {
        listener();
      } catch (err) {
        console.error("annotation listener failed", err);
      }
    }
  }
}
