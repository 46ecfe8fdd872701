// A scrolling ECG strip on a <canvas>: waveform batches (`start_ms`, `rate_hz`, `seq`,
// `samples`) placed on a time axis; a jump in `seq` or in time leaves a visible gap.

/**
 * @typedef {object} WaveBatch
 * @property {string} kind
 * @property {number} start_ms
 * @property {number} rate_hz
 * @property {number} seq
 * @property {number[]} samples
 * @property {string} [source]
 */

const WINDOW_MS = 6000;
const DELAY_MS = 300; // draw a little behind the newest sample, so batches arrive in time
const RANGE_MV = [-1.0, 2.0];

/**
 * @typedef {object} EcgOptions
 * @property {() => number} [clock]  the instant at the strip's right edge, in the batches' ms
 *   (replay drives the strip with its timeline); default: live, a little behind the newest
 */

export class EcgStrip {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {string} [kind]  the waveform kind drawn (default ecg_ii)
   * @param {EcgOptions} [options]
   */
  constructor(canvas, kind = "ecg_ii", options = {}) {
    this.canvas = canvas;
    this.kind = kind;
    this.clock = options.clock || null;
    /** @type {{start: number, end: number, rate: number, samples: number[], gap: boolean}[]} */
    this.batches = [];
    /** @type {number | null} the sender's clock minus ours (smoothed), from sample times */
    this.offset = null;
    /** @type {Map<string, number>} last seq by source */
    this._lastSeq = new Map();
    this.gaps = 0;
    this.samples = 0;
    this._running = false;
    this._frame = 0;
  }

  /** @param {WaveBatch} b */
  add(b) {
    if (!b || b.kind !== this.kind || !Array.isArray(b.samples) || !(b.rate_hz > 0)) return;
    const source = b.source || "";
    const last = this._lastSeq.get(source);
    const prev = this.batches[this.batches.length - 1];
    const end = b.start_ms + (b.samples.length * 1000) / b.rate_hz;
    // a gap: a missing batch (seq jump), or time that does not join the previous batch
    const gap =
      !prev ||
      (last !== undefined && b.seq !== last + 1) ||
      Math.abs(b.start_ms - prev.end) > 2000 / b.rate_hz + 20;
    if (prev && gap) this.gaps++;
    this._lastSeq.set(source, b.seq);
    this.batches.push({ start: b.start_ms, end, rate: b.rate_hz, samples: b.samples, gap });
    this.samples += b.samples.length;
    const skew = end - Date.now();
    this.offset = this.offset === null ? skew : Math.max(skew, this.offset - 5); // follow the newest
    const cutoff = end - WINDOW_MS * 2;
    while (this.batches.length && this.batches[0].end < cutoff) this.batches.shift();
    this.start();
  }

  /** Forget every batch (replay, after a seek). */
  clear() {
    this.batches = [];
    this._lastSeq.clear();
    this.offset = null;
  }

  start() {
    if (this._running) return;
    this._running = true;
    const tick = () => {
      if (!this._running) return;
      this.paint();
      this._frame = requestAnimationFrame(tick);
    };
    this._frame = requestAnimationFrame(tick);
  }

  stop() {
    this._running = false;
    cancelAnimationFrame(this._frame);
  }

  paint() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(c.clientWidth * dpr);
    const h = Math.round(c.clientHeight * dpr);
    if (!w || !h) return;
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
    }
    const ctx = c.getContext("2d");
    if (!ctx) return;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, h);
    // grid: 200 ms columns
    ctx.strokeStyle = "#123a12";
    ctx.lineWidth = 1;
    const now = this.clock ? this.clock() : Date.now() + (this.offset || 0) - DELAY_MS;
    const left = now - WINDOW_MS;
    const xOf = (/** @type {number} */ t) => ((t - left) / WINDOW_MS) * w;
    const [lo, hi] = RANGE_MV;
    const yOf = (/** @type {number} */ v) => h - ((v - lo) / (hi - lo)) * h;
    ctx.beginPath();
    for (let t = Math.ceil(left / 200) * 200; t < now; t += 200) {
      ctx.moveTo(Math.round(xOf(t)) + 0.5, 0);
      ctx.lineTo(Math.round(xOf(t)) + 0.5, h);
    }
    ctx.stroke();
    ctx.strokeStyle = "#3cff5a";
    ctx.lineWidth = 2 * dpr;
    ctx.lineJoin = "round";
    ctx.beginPath();
    let pen = false;
    for (const b of this.batches) {
      if (b.end < left || b.start > now) {
        pen = false;
        continue;
      }
      if (b.gap) pen = false;
      const step = 1000 / b.rate;
      for (let i = 0; i < b.samples.length; i++) {
        const t = b.start + i * step;
        if (t < left) continue;
        if (t > now) break;
        const x = xOf(t);
        const y = yOf(b.samples[i]);
        if (pen) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        pen = true;
      }
    }
    ctx.stroke();
  }
}
