// The replay overlay: a canvas over the replayed <video>, painted synchronously for each
// presented frame with the annotations that frame shows (overlay.js draws them exactly as the
// live consoles do).

import { containRect, drawAnnotation } from "./overlay.js";

/** @typedef {import("./replay-events.js").Shown} Shown */

export class ReplayOverlay {
  /**
   * @param {HTMLVideoElement} video
   * @param {HTMLCanvasElement} canvas  laid over the video (same box)
   */
  constructor(video, canvas) {
    this.video = video;
    this.canvas = canvas;
    /** @type {Shown[]} */
    this.shown = [];
    this._resize = new ResizeObserver(() => this.paint(this.shown));
    this._resize.observe(video);
  }

  /** @returns {string[]} ids of the annotations painted now */
  ids() {
    return this.shown.map((s) => s.annotation.id);
  }

  /**
   * Paint now (call it from the frame callback of the frame these belong to).
   * @param {Shown[]} shown
   */
  paint(shown) {
    this.shown = shown;
    const dpr = window.devicePixelRatio || 1;
    const box = this.canvas.getBoundingClientRect();
    const w = Math.round(box.width * dpr);
    const h = Math.round(box.height * dpr);
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (!this.video.videoWidth || !shown.length) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const rect = containRect(box.width, box.height, this.video.videoWidth, this.video.videoHeight);
    ctx.save();
    ctx.beginPath();
    ctx.rect(rect.x, rect.y, rect.width, rect.height);
    ctx.clip();
    for (const { annotation, alpha } of shown) drawAnnotation(ctx, rect, annotation, alpha);
    ctx.restore();
  }

  clear() {
    this.paint([]);
  }

  destroy() {
    this._resize.disconnect();
  }
}
