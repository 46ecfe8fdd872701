// The replay overlay: a canvas over the replayed <video>, painted synchronously for each
// presented frame with the annotations that frame shows (overlay.js draws them exactly as the
// live consoles do).

import { clearToPicture, drawAnnotation } from "./overlay.js";

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
    const picture = clearToPicture(this.canvas, this.video);
    if (!picture) return;
    const { ctx, rect } = picture;
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
