// The annotation overlay: a <canvas> laid exactly over a <video>, drawing the room's
// annotations (docs/protocol.md, "Annotations") in the video picture's coordinates.
// Points are normalized to the picture (0..1 of videoWidth/videoHeight); the picture sits
// inside the element as object-fit: contain places it (letterboxed or pillarboxed).

/**
 * @typedef {object} Annotation
 * @property {string} id
 * @property {string} [author]
 * @property {string} [author_name]
 * @property {string} color  "#rrggbb"
 * @property {"arrow" | "circle" | "stroke" | "text" | "pointer"} type
 * @property {string} track_id
 * @property {number[][]} points  [[x, y], ...] normalized to the picture
 * @property {string} [text]
 * @property {number} [width]  line width as a fraction of the picture's width
 * @property {{rtp_timestamp?: number, media_time?: number}} [frame]
 * @property {boolean} [frozen]
 * @property {number} [sent_ms]
 * @property {number} [server_ms]
 *
 * @typedef {{x: number, y: number, width: number, height: number}} Rect
 */

export const DEFAULT_WIDTH = 0.006;
export const POINTER_FADE_MS = 1500;

/**
 * Where a picture of `picW` x `picH` shows inside a box of `boxW` x `boxH` (object-fit: contain).
 * @param {number} boxW
 * @param {number} boxH
 * @param {number} picW
 * @param {number} picH
 * @returns {Rect}
 */
export function containRect(boxW, boxH, picW, picH) {
  if (!(boxW > 0 && boxH > 0 && picW > 0 && picH > 0)) return { x: 0, y: 0, width: boxW, height: boxH };
  const scale = Math.min(boxW / picW, boxH / picH);
  const width = picW * scale;
  const height = picH * scale;
  return { x: (boxW - width) / 2, y: (boxH - height) / 2, width, height };
}

/**
 * @param {Rect} rect
 * @param {number[]} point  normalized [x, y]
 * @returns {[number, number]} pixels in the box
 */
function px(rect, point) {
  return [rect.x + point[0] * rect.width, rect.y + point[1] * rect.height];
}

/**
 * Size `canvas` to its box at the device pixel ratio, clear it, and clip it to where the
 * `video`'s picture shows (letterboxed). Returns the context, saved (the caller restores it),
 * with the picture's rect in CSS pixels; null when there is no picture to draw on.
 * @param {HTMLCanvasElement} canvas
 * @param {HTMLVideoElement} video
 * @returns {{ctx: CanvasRenderingContext2D, rect: Rect} | null}
 */
export function clearToPicture(canvas, video) {
  const dpr = window.devicePixelRatio || 1;
  const box = canvas.getBoundingClientRect();
  const w = Math.round(box.width * dpr);
  const h = Math.round(box.height * dpr);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d");
  if (!ctx) return null;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, w, h);
  if (!video.videoWidth) return null;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const rect = containRect(box.width, box.height, video.videoWidth, video.videoHeight);
  ctx.save();
  ctx.beginPath();
  ctx.rect(rect.x, rect.y, rect.width, rect.height);
  ctx.clip();
  return { ctx, rect };
}

/**
 * Draw one annotation into `ctx` (box pixels), the picture being at `rect`.
 * @param {CanvasRenderingContext2D} ctx
 * @param {Rect} rect
 * @param {Annotation} a
 * @param {number} [alpha]  for fading pointers
 */
export function drawAnnotation(ctx, rect, a, alpha = 1) {
  const pts = (a.points || []).map((p) => px(rect, p));
  if (!pts.length) return;
  const lineWidth = Math.max(2, (a.width || DEFAULT_WIDTH) * rect.width);
  ctx.save();
  ctx.globalAlpha = alpha;
  ctx.strokeStyle = a.color || "#ffff00";
  ctx.fillStyle = a.color || "#ffff00";
  ctx.lineWidth = lineWidth;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  switch (a.type) {
    case "arrow": {
      if (pts.length < 2) break;
      const [[x0, y0], [x1, y1]] = pts;
      const angle = Math.atan2(y1 - y0, x1 - x0);
      const head = Math.max(12, lineWidth * 4);
      // the shaft stops where the head begins, so the tip stays sharp
      const sx = x1 - Math.cos(angle) * head * 0.8;
      const sy = y1 - Math.sin(angle) * head * 0.8;
      ctx.beginPath();
      ctx.moveTo(x0, y0);
      ctx.lineTo(sx, sy);
      ctx.stroke();
      ctx.beginPath();
      ctx.moveTo(x1, y1);
      ctx.lineTo(x1 - Math.cos(angle - 0.45) * head, y1 - Math.sin(angle - 0.45) * head);
      ctx.lineTo(x1 - Math.cos(angle + 0.45) * head, y1 - Math.sin(angle + 0.45) * head);
      ctx.closePath();
      ctx.fill();
      break;
    }
    case "circle": {
      if (pts.length < 2) break;
      const [[cx, cy], [rx, ry]] = pts;
      ctx.beginPath();
      ctx.arc(cx, cy, Math.max(2, Math.hypot(rx - cx, ry - cy)), 0, 2 * Math.PI);
      ctx.stroke();
      break;
    }
    case "stroke": {
      ctx.beginPath();
      ctx.moveTo(pts[0][0], pts[0][1]);
      for (const [x, y] of pts.slice(1)) ctx.lineTo(x, y);
      if (pts.length === 1) ctx.lineTo(pts[0][0] + 0.1, pts[0][1]);
      ctx.stroke();
      break;
    }
    case "text":
      drawLabel(ctx, rect, pts[0], a);
      break;
    case "pointer": {
      const [x, y] = pts[0];
      const r = Math.max(8, rect.width * 0.012);
      ctx.beginPath();
      ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fill();
      ctx.globalAlpha = alpha * 0.35;
      ctx.beginPath();
      ctx.arc(x, y, r * 2, 0, 2 * Math.PI);
      ctx.fill();
      break;
    }
    default:
      break;
  }
  ctx.restore();
}

/**
 * A text label on a dark plate, with the author's name tag above it.
 * @param {CanvasRenderingContext2D} ctx
 * @param {Rect} rect
 * @param {[number, number]} at
 * @param {Annotation} a
 */
function drawLabel(ctx, rect, at, a) {
  const size = Math.max(14, Math.round(rect.width * 0.03));
  const tagSize = Math.max(11, Math.round(size * 0.6));
  const [x, y] = at;
  const text = a.text || "";
  ctx.font = `700 ${size}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  const w = ctx.measureText(text).width;
  const pad = size * 0.25;
  ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
  ctx.fillRect(x - pad, y - pad, w + 2 * pad, size + 2 * pad);
  ctx.fillStyle = a.color || "#ffff00";
  ctx.fillText(text, x, y);
  if (a.author_name) {
    ctx.font = `600 ${tagSize}px system-ui, sans-serif`;
    ctx.textBaseline = "bottom";
    ctx.fillText(a.author_name, x - pad, y - pad - 2);
  }
}

/**
 * A canvas over one video, drawing the annotations of `store` that `accept` takes.
 */
export class OverlayCanvas {
  /**
   * @param {HTMLVideoElement} video  its parent must be positioned (the canvas fills it)
   * @param {import("./annotation-store.js").AnnotationStore} store
   * @param {(a: Annotation) => boolean} accept  which annotations belong on this video
   */
  constructor(video, store, accept) {
    this.video = video;
    this.store = store;
    this.accept = accept;
    this.canvas = document.createElement("canvas");
    this.canvas.className = "overlay";
    this.canvas.dataset.testid = "overlay-canvas";
    this.canvas.setAttribute("aria-hidden", "true");
    video.after(this.canvas);
    /** @type {Annotation | null} what the local user is drawing (not yet sent) */
    this.draft = null;
    this._frame = 0;
    this._resize = new ResizeObserver(() => this.redraw());
    this._resize.observe(video);
    this._onVideo = () => this.redraw();
    video.addEventListener("resize", this._onVideo);
    video.addEventListener("loadedmetadata", this._onVideo);
    this._off = store.onChange(() => this.redraw());
    this.redraw();
  }

  /** The picture's rectangle in the canvas (CSS pixels). */
  pictureRect() {
    const box = this.canvas.getBoundingClientRect();
    return containRect(box.width, box.height, this.video.videoWidth, this.video.videoHeight);
  }

  /**
   * Normalized picture coordinates of a pointer event; null outside the picture unless
   * `clamp` (then the nearest point of the picture).
   * @param {{clientX: number, clientY: number}} event
   * @param {boolean} [clamp]
   * @returns {[number, number] | null}
   */
  toPicture(event, clamp = false) {
    if (!this.video.videoWidth) return null;
    const box = this.canvas.getBoundingClientRect();
    const rect = containRect(box.width, box.height, this.video.videoWidth, this.video.videoHeight);
    let x = (event.clientX - box.left - rect.x) / rect.width;
    let y = (event.clientY - box.top - rect.y) / rect.height;
    if (clamp) {
      x = Math.min(1, Math.max(0, x));
      y = Math.min(1, Math.max(0, y));
    }
    if (!(x >= 0 && x <= 1 && y >= 0 && y <= 1)) return null;
    return [Math.round(x * 10000) / 10000, Math.round(y * 10000) / 10000];
  }

  /** @param {Annotation | null} draft */
  setDraft(draft) {
    this.draft = draft;
    this.redraw();
  }

  /** Draw on the next animation frame (coalesced). */
  redraw() {
    if (this._frame) return;
    this._frame = requestAnimationFrame(() => {
      this._frame = 0;
      this.paint();
    });
  }

  /** Draw now. */
  paint() {
    const picture = clearToPicture(this.canvas, this.video);
    if (!picture) return;
    const { ctx, rect } = picture;
    for (const a of this.store.kept()) if (this.accept(a)) drawAnnotation(ctx, rect, a);
    const now = performance.now();
    let fading = false;
    for (const { annotation, at } of this.store.pointers()) {
      if (!this.accept(annotation)) continue;
      const age = now - at;
      if (age >= POINTER_FADE_MS) continue;
      drawAnnotation(ctx, rect, annotation, 1 - age / POINTER_FADE_MS);
      fading = true;
    }
    if (this.draft) drawAnnotation(ctx, rect, this.draft, 0.8);
    ctx.restore();
    if (fading) this.redraw(); // keep fading the pointers out
  }

  destroy() {
    this._off();
    this._resize.disconnect();
    this.video.removeEventListener("resize", this._onVideo);
    this.video.removeEventListener("loadedmetadata", this._onVideo);
    if (this._frame) cancelAnimationFrame(this._frame);
    this.canvas.remove();
  }
}
