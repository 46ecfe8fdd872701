// The expert's annotation tools: a toolbar (pen, arrow, circle, text, pointer; undo, clear)
// and the pointer handling on an overlay canvas that turns gestures into `annotate` requests.

import { part } from "./dom.js";

/** @typedef {import("./overlay.js").Annotation} Annotation */
/** @typedef {import("./overlay.js").OverlayCanvas} OverlayCanvas */
/** @typedef {import("./freeze-frame.js").FreezeFrame} FreezeFrame */
/** @typedef {import("./protocol.js").RoomConnection} RoomConnection */
/** @typedef {"stroke" | "arrow" | "circle" | "text" | "pointer"} Tool */

/**
 * @typedef {object} DrawTarget  the video being drawn on
 * @property {OverlayCanvas} overlay
 * @property {string} trackId
 * @property {FreezeFrame} freeze
 */

/** @type {Record<string, Tool>} */
const SHORTCUTS = { p: "stroke", a: "arrow", c: "circle", t: "text", l: "pointer" };
const POINTER_INTERVAL_MS = 80;
const MAX_STROKE_POINTS = 2000;
const MIN_STEP = 0.002;

/** @param {EventTarget | null} target */
export function isTyping(target) {
  const el = /** @type {HTMLElement | null} */ (target);
  return !!el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.isContentEditable);
}

export class AnnotateTools {
  /**
   * @param {HTMLElement} toolbar  the [data-testid=annotate-toolbar] element
   * @param {RoomConnection} connection
   */
  constructor(toolbar, connection) {
    this.toolbar = toolbar;
    this.connection = connection;
    /** @type {Tool} */
    this.tool = "arrow";
    /** @type {DrawTarget | null} */
    this.target = null;
    this.color = "#ffffff"; // the server's colour for us, once the first ack tells it
    /** @type {{id: string, rtt_ms: number}[]} annotation round trips (ack time - sent_ms) */
    this.roundTrips = [];
    this.textInput = /** @type {HTMLInputElement} */ (part(toolbar, "annotation-text"));
    this.status = part(toolbar, "annotate-status");
    this.rtt = part(toolbar, "annotation-rtt");
    this.clearAll = /** @type {HTMLButtonElement} */ (part(toolbar, "clear-all"));
    /** @type {{points: number[][], lastSent: number, pointerId: number} | null} */
    this._gesture = null;
    this._n = 0;

    for (const button of toolbar.querySelectorAll("[data-tool]")) {
      button.addEventListener("click", () => this.select(/** @type {Tool} */ (/** @type {HTMLElement} */ (button).dataset.tool)));
    }
    part(toolbar, "undo").addEventListener("click", () => this.undo());
    part(toolbar, "clear-own").addEventListener("click", () => this.clear("own"));
    this.clearAll.addEventListener("click", () => this.clear("all"));
    this.textInput.addEventListener("keydown", (e) => {
      if (e.key === "Escape" || e.key === "Enter") this.textInput.blur();
    });
    this._onKey = (/** @type {KeyboardEvent} */ e) => this._key(e);
    document.addEventListener("keydown", this._onKey);
    this.select(this.tool);
  }

  /** @param {string[]} grants  shows "clear all" only with `clear_annotations` */
  setGrants(grants) {
    this.clearAll.hidden = !grants.includes("clear_annotations");
  }

  /** @param {Tool} tool */
  select(tool) {
    this.tool = tool;
    for (const button of this.toolbar.querySelectorAll("[data-tool]")) {
      const b = /** @type {HTMLElement} */ (button);
      b.setAttribute("aria-pressed", String(b.dataset.tool === tool));
    }
    const label = this.textInput.closest("label") || this.textInput;
    /** @type {HTMLElement} */ (label).hidden = tool !== "text";
    this.textInput.hidden = false;
    this.toolbar.dataset.tool = tool;
  }

  /**
   * Draw on this video (or nothing): wires the pointer events of its overlay canvas.
   * @param {DrawTarget | null} target
   */
  setTarget(target) {
    if (this.target) this._unwire(this.target.overlay.canvas);
    this.target = target;
    if (target) this._wire(target.overlay.canvas);
  }

  /** @param {HTMLCanvasElement} canvas */
  _wire(canvas) {
    canvas.classList.add("drawable");
    this._handlers = {
      pointerdown: (/** @type {PointerEvent} */ e) => this._down(e),
      pointermove: (/** @type {PointerEvent} */ e) => this._move(e),
      pointerup: (/** @type {PointerEvent} */ e) => this._up(e),
      pointercancel: () => this._cancel(),
    };
    for (const [name, fn] of Object.entries(this._handlers)) canvas.addEventListener(name, /** @type {any} */ (fn));
  }

  /** @param {HTMLCanvasElement} canvas */
  _unwire(canvas) {
    canvas.classList.remove("drawable");
    for (const [name, fn] of Object.entries(this._handlers || {})) canvas.removeEventListener(name, /** @type {any} */ (fn));
    this._gesture = null;
  }

  /** @param {PointerEvent} e */
  _down(e) {
    const t = this.target;
    if (!t || e.button !== 0) return;
    const p = t.overlay.toPicture(e);
    if (!p) return;
    e.preventDefault();
    t.overlay.canvas.setPointerCapture(e.pointerId);
    if (this.tool === "text") {
      const text = this.textInput.value.trim();
      if (!text) {
        this.say("Type the label first, then click where it goes.");
        this.textInput.focus();
        return;
      }
      this.send({ type: "text", points: [p], text: text.slice(0, 200) });
      // placed: the keys are shortcuts again
      this.textInput.value = "";
      this.textInput.blur();
      return;
    }
    this._gesture = { points: [p], lastSent: 0, pointerId: e.pointerId };
    if (this.tool === "pointer") this._pointer(p);
    else this._draft();
  }

  /** @param {PointerEvent} e */
  _move(e) {
    const g = this._gesture;
    const t = this.target;
    if (!g || !t || e.pointerId !== g.pointerId) return;
    const p = t.overlay.toPicture(e, true);
    if (!p) return;
    if (this.tool === "pointer") {
      this._pointer(p);
      return;
    }
    if (this.tool === "stroke") {
      const last = g.points[g.points.length - 1];
      if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= MIN_STEP && g.points.length < MAX_STROKE_POINTS) g.points.push(p);
    } else {
      g.points = [g.points[0], p];
    }
    this._draft();
  }

  /** @param {PointerEvent} e */
  _up(e) {
    const g = this._gesture;
    const t = this.target;
    if (!g || !t || e.pointerId !== g.pointerId) return;
    this._gesture = null;
    t.overlay.setDraft(null);
    const p = t.overlay.toPicture(e, true);
    if (this.tool === "pointer") return;
    if (p && this.tool !== "stroke") g.points = [g.points[0], p];
    else if (p && g.points.length < MAX_STROKE_POINTS) g.points.push(p);
    if (this.tool === "stroke") {
      if (g.points.length < 2) g.points.push([g.points[0][0] + 0.001, g.points[0][1]]);
      this.send({ type: "stroke", points: g.points });
      return;
    }
    const [a, b] = g.points;
    if (!b || Math.hypot(b[0] - a[0], b[1] - a[1]) < 0.005) {
      this.say(this.tool === "arrow" ? "Drag from the tail to the tip to draw an arrow." : "Drag from the centre outwards to draw a circle.");
      return;
    }
    this.send({ type: this.tool, points: [a, b] });
  }

  _cancel() {
    this._gesture = null;
    if (this.target) this.target.overlay.setDraft(null);
  }

  _draft() {
    const g = this._gesture;
    if (!g || !this.target) return;
    this.target.overlay.setDraft({
      id: "draft", type: this.tool, color: this.color, track_id: this.target.trackId, points: g.points,
    });
  }

  /** @param {number[]} p */
  _pointer(p) {
    const g = this._gesture;
    const now = performance.now();
    if (g && now - g.lastSent < POINTER_INTERVAL_MS) return;
    if (g) g.lastSent = now;
    this.send({ type: "pointer", points: [p] });
  }

  /**
   * Send one annotation on the current target. Resolves with the ack data, or null.
   * @param {{type: string, points: number[][], text?: string}} shape
   * @returns {Promise<{id: string, server_ms: number, color: string} | null>}
   */
  async send(shape) {
    const t = this.target;
    if (!t) return null;
    const frame = t.freeze.currentFrame();
    const sent = Date.now();
    /** @type {Record<string, any>} */
    const payload = {
      ...shape,
      track_id: t.trackId,
      frozen: t.freeze.frozen,
      client_id: `c${++this._n}`,
      sent_ms: sent,
    };
    // the frame drawn on (a received WebRTC frame has an RTP timestamp; the protocol needs it)
    if (frame && typeof frame.rtp_timestamp === "number") payload.frame = frame;
    try {
      const ack = await this.connection.request("annotate", payload);
      const rtt = Date.now() - sent;
      if (ack && ack.color) this.color = ack.color;
      this.roundTrips.push({ id: ack ? ack.id : "", rtt_ms: rtt });
      if (this.roundTrips.length > 200) this.roundTrips.shift();
      this.rtt.textContent = `${rtt} ms`;
      this.rtt.dataset.ms = String(rtt);
      if (shape.type !== "pointer") this.say("");
      return ack;
    } catch (err) {
      const e = /** @type {any} */ (err);
      this.say(e.code === "rate_limited" ? "Too fast: wait a moment." : `Not drawn: ${e.code || ""} ${e.message || ""}`);
      return null;
    }
  }

  async undo() {
    try {
      await this.connection.request("annotation_undo", {});
      this.say("");
    } catch (err) {
      const e = /** @type {any} */ (err);
      this.say(e.code === "not_found" ? "Nothing of yours to undo." : `Cannot undo: ${e.message || e.code}`);
    }
  }

  /** @param {"own" | "all"} scope */
  async clear(scope) {
    try {
      await this.connection.request("annotation_clear", { scope });
      this.say("");
    } catch (err) {
      const e = /** @type {any} */ (err);
      this.say(`Cannot clear: ${e.message || e.code}`);
    }
  }

  /** @param {string} text */
  say(text) {
    this.status.textContent = text;
  }

  /** @param {KeyboardEvent} e */
  _key(e) {
    if (e.ctrlKey || e.metaKey || e.altKey || isTyping(e.target)) return;
    const key = e.key.toLowerCase();
    if (key in SHORTCUTS) {
      this.select(SHORTCUTS[key]);
      if (SHORTCUTS[key] === "text") this.textInput.focus();
      e.preventDefault();
    } else if (key === "z" || key === "u") {
      this.undo();
      e.preventDefault();
    } else if (key === "f" && this.target) {
      this.target.freeze.toggle();
      e.preventDefault();
    }
  }

  destroy() {
    this.setTarget(null);
    document.removeEventListener("keydown", this._onKey);
  }
}
