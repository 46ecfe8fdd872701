// A recording's event log (events.jsonl) indexed for replay: which annotations show on a
// presented frame, the vitals numerics and alarms at a timeline instant, and the ECG samples
// placed on the timeline. Everything is keyed by arrival time `t` (docs/recording.md), except
// an annotation drawn on a known frame, which shows from that very frame.

import { POINTER_FADE_MS } from "./overlay.js";
import { lastAtOrBefore, mediaTime, mediaTimeOfTs, segmentOfTs, wallMs } from "./replay-time.js";

/** @typedef {import("./overlay.js").Annotation} Annotation */
/** @typedef {import("./replay-time.js").Manifest} Manifest */
/** @typedef {import("./replay-time.js").Segment} Segment */
/** @typedef {import("./vitals-panel.js").Numeric} Numeric */
/** @typedef {import("./vitals-panel.js").Alarm} Alarm */
/** @typedef {import("./ecg-strip.js").WaveBatch} WaveBatch */

/**
 * @typedef {object} Placed  an annotation on the timeline
 * @property {Annotation} annotation
 * @property {string} trackId
 * @property {Segment | null} segment  the segment holding its frame (frame-exact placement)
 * @property {number | null} startMedia  file position (s) of that frame in `segment`
 * @property {number} start  timeline ms from which it shows
 * @property {number} end  timeline ms at which it goes (removal, a newer pointer; Infinity)
 * @property {boolean} pointer
 *
 * @typedef {{annotation: Annotation, alpha: number}} Shown
 */

/** Half a millisecond of WebM timestamp rounding, and then some. */
const FRAME_EPSILON_S = 0.002;
/** Batches either side used to estimate a monitor's clock against arrival time. */
const ECG_OFFSET_WINDOW = 25;

/**
 * Parse NDJSON text; garbled lines and a torn last line (a crash mid-write) are skipped.
 * @param {string} text
 * @returns {any[]} events in timeline order (stable for equal `t`)
 */
export function parseEvents(text) {
  const lines = text.split("\n");
  if (!text.endsWith("\n")) lines.pop(); // torn (or empty) last line
  const events = [];
  for (const line of lines) {
    if (!line.trim()) continue;
    try {
      const event = JSON.parse(line);
      if (event && typeof event === "object" && typeof event.t === "number") events.push(event);
    } catch {
      /* a garbled line: skipped, as the server's readers do */
    }
  }
  return events
    .map((event, i) => ({ event, i }))
    .sort((a, b) => a.event.t - b.event.t || a.i - b.i)
    .map(({ event }) => event);
}

export class ReplayEvents {
  /**
   * @param {Manifest} manifest
   * @param {any[]} events  as parseEvents returns them
   */
  constructor(manifest, events) {
    this.manifest = manifest;
    this.events = events;
    /** @type {Placed[]} */
    this.annotations = [];
    /** @type {Map<string, {t: number[], numerics: Numeric[]}>} */
    this._numerics = new Map();
    /** @type {{t: number, type: string, alarm: Alarm}[]} */
    this._alarms = [];
    /** @type {WaveBatch[]} ECG batches with start_ms placed on the timeline, by start */
    this.ecg = [];
    this._placeAnnotations();
    this._indexVitals();
  }

  _placeAnnotations() {
    /** @type {Map<string, number>} */
    const removed = new Map();
    for (const e of this.events) {
      if (e.type !== "annotation_removed") continue;
      for (const id of e.ids || []) if (!removed.has(id)) removed.set(id, e.t);
    }
    /** @type {Map<string, Placed>} latest pointer by author */
    const pointers = new Map();
    for (const e of this.events) {
      const a = e.type === "annotation" ? e.annotation : null;
      if (!a || !Array.isArray(a.points) || !a.track_id) continue;
      const sourceTs = a.frame && typeof a.frame.source_ts === "number" ? a.frame.source_ts : null;
      const segment = sourceTs === null ? null : segmentOfTs(this.manifest, a.track_id, sourceTs);
      const startMedia = segment && sourceTs !== null ? mediaTimeOfTs(segment, sourceTs) : null;
      const start = segment && startMedia !== null ? wallMs(segment, startMedia) : e.t;
      const pointer = a.type === "pointer";
      /** @type {Placed} */
      const placed = {
        annotation: a,
        trackId: a.track_id,
        segment: startMedia === null ? null : segment,
        startMedia,
        start,
        end: pointer ? start + POINTER_FADE_MS : removed.get(a.id) ?? Infinity,
        pointer,
      };
      if (pointer) {
        // as live: an author's newer pointer replaces the older one
        const prev = pointers.get(a.author || "");
        if (prev && prev.end > start) prev.end = Math.max(prev.start, start);
        pointers.set(a.author || "", placed);
      }
      this.annotations.push(placed);
    }
    this.annotations.sort((x, y) => x.start - y.start);
  }

  /**
   * What shows on the frame at media time `media` (s) of `segment`: only the annotations of
   * its track; drawn on a known frame, from that frame on; else from their arrival.
   * @param {Segment} segment
   * @param {number} media
   * @returns {Shown[]}
   */
  visibleAt(segment, media) {
    const wall = wallMs(segment, media);
    /** @type {Shown[]} */
    const shown = [];
    for (const p of this.annotations) {
      if (p.trackId !== segment.track_id) continue;
      let started;
      if (p.segment && p.segment.file === segment.file && p.startMedia !== null) {
        started = media >= p.startMedia - FRAME_EPSILON_S;
      } else if (p.segment) {
        started = wall >= p.start;
      } else {
        // arrival time, mapped into this file by its own clock
        started = media >= mediaTime(segment, p.start) - FRAME_EPSILON_S;
      }
      if (!started || wall >= p.end) continue;
      const alpha = p.pointer ? Math.max(0, 1 - (wall - p.start) / POINTER_FADE_MS) : 1;
      if (alpha > 0) shown.push({ annotation: p.annotation, alpha });
    }
    return shown;
  }

  _indexVitals() {
    /** @type {Map<string, {t: number, batch: WaveBatch}[]>} ECG batches by source */
    const waves = new Map();
    for (const e of this.events) {
      if (e.type === "vitals" && e.batch) {
        for (const n of e.batch.numerics || []) {
          if (!n || typeof n.value !== "number" || typeof n.kind !== "string") continue;
          const kind = n.kind; // rooms.vitals.model keys: the server normalizes every feed
          let series = this._numerics.get(kind);
          if (!series) this._numerics.set(kind, (series = { t: [], numerics: [] }));
          series.t.push(e.t);
          series.numerics.push({ ...n, kind });
        }
        for (const w of e.batch.waveforms || []) {
          if (!w || !Array.isArray(w.samples) || !(w.rate_hz > 0)) continue;
          const source = `${w.source || ""}/${w.kind}`;
          if (!waves.has(source)) waves.set(source, []);
          /** @type {any[]} */ (waves.get(source)).push({ t: e.t, batch: w });
        }
      } else if (e.type === "alarm_raised" || e.type === "alarm_cleared") {
        if (e.alarm && e.alarm.id) this._alarms.push({ t: e.t, type: e.type, alarm: e.alarm });
      }
    }
    // Place each batch by arrival: the device's own clock only orders the samples. The offset
    // device -> timeline is the least transport delay over nearby batches (jitter only ever
    // delays), so a monitor's clock error or drift does not shift the ECG against the video.
    for (const list of waves.values()) {
      const lags = list.map(({ t, batch }) => t - (batch.start_ms + (batch.samples.length * 1000) / batch.rate_hz));
      list.forEach(({ batch }, i) => {
        let offset = Infinity;
        const lo = Math.max(0, i - ECG_OFFSET_WINDOW);
        const hi = Math.min(list.length, i + ECG_OFFSET_WINDOW + 1);
        for (let j = lo; j < hi; j++) offset = Math.min(offset, lags[j]);
        this.ecg.push({ ...batch, start_ms: batch.start_ms + offset });
      });
    }
    this.ecg.sort((a, b) => a.start_ms - b.start_ms);
    this._ecgStarts = this.ecg.map((b) => b.start_ms);
    this._ecgLongest = Math.max(0, ...this.ecg.map((b) => (b.samples.length * 1000) / b.rate_hz));
  }

  /**
   * The latest numeric of each kind at or before `wall` (by arrival).
   * @param {number} wall
   * @returns {Numeric[]}
   */
  numericsAt(wall) {
    /** @type {Numeric[]} */
    const out = [];
    for (const series of this._numerics.values()) {
      const i = lastAtOrBefore(series.t, wall);
      if (i >= 0) out.push(series.numerics[i]);
    }
    return out;
  }

  /**
   * Alarms active at `wall`.
   * @param {number} wall
   * @returns {Alarm[]}
   */
  alarmsAt(wall) {
    /** @type {Map<string, Alarm>} */
    const active = new Map();
    for (const { t, type, alarm } of this._alarms) {
      if (t > wall) break;
      if (type === "alarm_raised") active.set(alarm.id, alarm);
      else active.delete(alarm.id);
    }
    return [...active.values()];
  }

  /**
   * Placed ECG batches that overlap [from, to].
   * @param {number} from
   * @param {number} to
   * @returns {WaveBatch[]}
   */
  ecgBetween(from, to) {
    const starts = /** @type {number[]} */ (this._ecgStarts);
    let i = lastAtOrBefore(starts, from - /** @type {number} */ (this._ecgLongest));
    i = Math.max(0, i);
    const out = [];
    for (; i < this.ecg.length && starts[i] <= to; i++) {
      const b = this.ecg[i];
      if (b.start_ms + (b.samples.length * 1000) / b.rate_hz >= from) out.push(b);
    }
    return out;
  }

  /** @returns {{t: number, title: string, by: string}[]} the manifest's, else the log's */
  chapters() {
    const listed = /** @type {any} */ (this.manifest).chapters || [];
    const source = listed.length ? listed : this.events.filter((e) => e.type === "chapter");
    return source
      .map((/** @type {any} */ c) => ({ t: c.t, title: String(c.title || ""), by: String(c.by || "") }))
      .sort((/** @type {any} */ a, /** @type {any} */ b) => a.t - b.t);
  }
}
