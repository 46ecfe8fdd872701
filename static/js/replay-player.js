// The replay clock and media: one timeline (arrival ms, docs/recording.md) that the main video
// drives while one of its segments plays, and a free-running clock drives through gaps (the
// publisher reconnecting) and recordings without video. Audio tracks follow the timeline.

import { mainVideo, manifestEnd, mediaTime, segmentAt, segmentEnd, wallMs } from "./replay-time.js";

/** @typedef {import("./replay-time.js").Manifest} Manifest */
/** @typedef {import("./replay-time.js").Segment} Segment */
/** @typedef {import("./replay-time.js").Track} Track */

const AUDIO_DRIFT_S = 0.25; // re-seek an audio track that drifts further than this
const AUDIO_SYNC_MS = 250;
const EVENT_TIMEOUT_MS = 5000;

/**
 * Wait for one of `names` on `target` (or the timeout); true if it came.
 * @param {EventTarget} target
 * @param {string[]} names
 * @param {number} [timeout]
 * @returns {Promise<string | null>} the event's name, null on timeout
 */
function once(target, names, timeout = EVENT_TIMEOUT_MS) {
  return new Promise((resolve) => {
    /** @param {string | null} name */
    const done = (name) => {
      clearTimeout(timer);
      for (const n of names) target.removeEventListener(n, handlers[n]);
      resolve(name);
    };
    /** @type {Record<string, () => void>} */
    const handlers = {};
    for (const n of names) {
      handlers[n] = () => done(n);
      target.addEventListener(n, handlers[n]);
    }
    const timer = setTimeout(() => done(null), timeout);
  });
}

/**
 * @typedef {object} PlayerOptions
 * @property {Manifest} manifest
 * @property {Record<string, string>} links  signed URL by file name
 * @property {HTMLVideoElement} video
 * @property {HTMLElement} audioHost  where the <audio> elements go
 * @property {(segment: Segment | null, media: number) => void} onFrame  each presented frame
 *   of the main video (segment null: no video at this instant)
 * @property {(wall: number) => void} onTick  every animation frame: the timeline instant
 * @property {() => void} onState  playing, rate or gap changed
 */

export class ReplayPlayer {
  /** @param {PlayerOptions} options */
  constructor(options) {
    this.manifest = options.manifest;
    this.links = options.links;
    this.video = options.video;
    this.onFrame = options.onFrame;
    this.onTick = options.onTick;
    this.onState = options.onState;
    this.start = this.manifest.started_ms;
    this.end = Math.max(manifestEnd(this.manifest), this.start);
    /** @type {Track | null} */
    this.track = mainVideo(this.manifest);
    this.playing = false;
    this.rate = 1;
    /** @type {Segment | null} the main segment at the current instant (null: a gap) */
    this.segment = null;
    /** @type {string | null} the file loaded in the video element */
    this._loaded = null;
    this._entering = false; // loading or seeking: the free clock drives meanwhile
    this._clock = { wall: this.start, perf: performance.now() };
    this._seekId = 0;
    /** @type {{segment: Segment, media: number} | null} the frame on screen */
    this.lastFrame = null;
    /** @type {(() => void)[]} */
    this._frameWaiters = [];
    this.audioBlocked = false;
    this._audioSyncAt = 0;
    this.audios = this.manifest.tracks
      .filter((t) => t.kind === "audio" && t.segments.some((s) => s.first_arrival_ms != null))
      .map((track) => {
        const el = document.createElement("audio");
        el.preload = "auto";
        el.dataset.testid = "replay-audio";
        el.dataset.track = track.key;
        options.audioHost.append(el);
        return { track, el, file: /** @type {string | null} */ (null) };
      });
    this.video.muted = true; // the picture only; sound comes from the audio tracks
    this._onFrameCallback = this._onFrameCallback.bind(this);
    this.video.requestVideoFrameCallback(this._onFrameCallback);
    this._running = true;
    const tick = () => {
      if (!this._running) return;
      this._tick();
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  /** @returns {number} the timeline instant (ms since the epoch) */
  wall() {
    let wall;
    if (this.segment && this._loaded === this.segment.file && !this._entering) {
      wall = wallMs(this.segment, this.video.currentTime);
    } else {
      const run = this.playing ? (performance.now() - this._clock.perf) * this.rate : 0;
      wall = this._clock.wall + run;
    }
    return Math.min(this.end, Math.max(this.start, wall));
  }

  /** @returns {number} ms since the recording's start */
  position() {
    return this.wall() - this.start;
  }

  get duration() {
    return this.end - this.start;
  }

  /** @returns {"none" | "before" | "between" | "after" | null} why there is no picture */
  gap() {
    if (this.segment) return null;
    if (!this.track) return "none";
    const wall = this.wall();
    const starts = this.track.segments.map((s) => s.first_arrival_ms).filter((s) => s != null);
    if (wall < Math.min(.../** @type {number[]} */ (starts))) return "before";
    const ends = this.track.segments.map(segmentEnd).filter((e) => e !== null);
    if (wall >= Math.max(.../** @type {number[]} */ (ends))) return "after";
    return "between";
  }

  /** @param {number} wall */
  _setClock(wall) {
    this._clock = { wall, perf: performance.now() };
  }

  /**
   * Go to `ms` since the start. Resolves once the frame there is on screen (or the gap shown).
   * @param {number} ms
   */
  async seek(ms) {
    const id = ++this._seekId;
    const wall = Math.min(this.end, Math.max(this.start, this.start + ms));
    this._setClock(wall);
    const segment = this.track ? segmentAt(this.track, wall) : null;
    if (segment) await this._show(segment, id);
    else this._enterGap(wall);
    this._syncAudio(this.wall(), true);
    this.onTick(this.wall());
  }

  /**
   * Show `segment` at the clock's instant (load it if needed), then follow the video.
   * @param {Segment} segment
   * @param {number} id  the seek this belongs to (a newer one wins)
   */
  async _show(segment, id) {
    const changed = this.segment !== segment;
    this._entering = true;
    this.segment = segment;
    if (changed) this.onState();
    if (this._loaded !== segment.file) {
      this._loaded = segment.file;
      this.lastFrame = null;
      this.video.src = this.links[segment.file];
      const got = await once(this.video, ["loadedmetadata", "error"]);
      if (got !== "loadedmetadata") console.error("replay: cannot load", segment.file, this.video.error);
    }
    if (id !== this._seekId) return;
    const duration = segment.duration || this.video.duration || 0;
    const media = Math.max(0, Math.min(mediaTime(segment, this.wall()), Math.max(0, duration - 0.001)));
    this.video.playbackRate = this.rate;
    this.video.currentTime = media;
    await once(this.video, ["seeked", "error"]);
    if (id !== this._seekId) return;
    this._entering = false;
    if (this.playing) this._playVideo();
    await this._nextFrame(250);
    if (id !== this._seekId) return;
    // the frame callback may not come again (the same frame): paint what is on screen
    const frame = this.lastFrame;
    if (frame && frame.segment === segment) this.onFrame(segment, frame.media);
  }

  /** @param {number} wall */
  _enterGap(wall) {
    this.segment = null;
    this._entering = false;
    this.video.pause();
    this._setClock(wall);
    this.lastFrame = null;
    this.onFrame(null, 0);
    this.onState(); // which gap it is may have changed too
  }

  /** @returns {number} where to open: the first picture if it comes within seconds, else 0 */
  openingPosition() {
    const starts = this.track ? this.track.segments.map((s) => s.first_arrival_ms).filter((s) => s != null) : [];
    const first = starts.length ? Math.min(.../** @type {number[]} */ (starts)) - this.start : 0;
    return first > 0 && first <= 5000 ? first : 0;
  }

  /** @param {number} timeout */
  _nextFrame(timeout) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeout);
      this._frameWaiters.push(() => {
        clearTimeout(timer);
        resolve(undefined);
      });
    });
  }

  /**
   * @param {DOMHighResTimeStamp} _now
   * @param {VideoFrameCallbackMetadata} metadata
   */
  _onFrameCallback(_now, metadata) {
    this.video.requestVideoFrameCallback(this._onFrameCallback);
    const segment = this.segment;
    if (segment && this._loaded === segment.file) {
      this.lastFrame = { segment, media: metadata.mediaTime };
      this.onFrame(segment, metadata.mediaTime);
    }
    const waiters = this._frameWaiters.splice(0);
    for (const resolve of waiters) resolve();
  }

  _playVideo() {
    this.video.playbackRate = this.rate;
    this.video.play().catch((err) => {
      if (err && err.name !== "AbortError") console.error("replay: video", err);
    });
  }

  play() {
    if (this.playing) return;
    if (this.wall() >= this.end - 1) this.seek(0);
    this._setClock(this.wall());
    this.playing = true;
    if (this.segment && !this._entering) this._playVideo();
    this.onState();
  }

  pause() {
    const wall = this.wall();
    this.playing = false;
    this._setClock(wall);
    this.video.pause();
    for (const a of this.audios) a.el.pause();
    this.onState();
  }

  /** @param {number} rate */
  setRate(rate) {
    const wall = this.wall();
    this.rate = rate;
    this._setClock(wall);
    this.video.defaultPlaybackRate = rate; // kept when the next segment loads
    this.video.playbackRate = rate;
    for (const a of this.audios) {
      a.el.defaultPlaybackRate = rate;
      a.el.playbackRate = rate;
    }
    this.onState();
  }

  _tick() {
    const wall = this.wall();
    if (this.playing && !this._entering) {
      if (wall >= this.end) {
        this.pause();
      } else if (this.segment) {
        const end = segmentEnd(this.segment);
        if (this.video.ended || (end !== null && wall >= end - 1)) {
          // this segment is over: the next one, if it starts right here, else a gap
          const at = end === null ? wall : end;
          const next = this.track ? segmentAt(this.track, at) : null;
          this._setClock(at);
          if (next && next !== this.segment) this._show(next, ++this._seekId);
          else this._enterGap(at);
        }
      } else if (this.track) {
        const next = segmentAt(this.track, wall);
        if (next) {
          this._setClock(wall);
          this._show(next, ++this._seekId);
        }
      }
    }
    this._syncAudio(this.wall(), false);
    this.onTick(this.wall());
  }

  /**
   * Keep every audio track at the timeline (re-seek on drift, play/pause with the clock).
   * @param {number} wall
   * @param {boolean} force  now, not at the next sync interval
   */
  _syncAudio(wall, force) {
    if (!this.audios.length) return;
    const now = performance.now();
    if (!force && now - this._audioSyncAt < AUDIO_SYNC_MS) return;
    this._audioSyncAt = now;
    for (const a of this.audios) {
      const segment = segmentAt(a.track, wall);
      if (!segment) {
        if (!a.el.paused) a.el.pause();
        continue;
      }
      if (a.file !== segment.file) {
        a.file = segment.file;
        a.el.src = this.links[segment.file];
      }
      const want = mediaTime(segment, wall);
      if (a.el.readyState >= 1 && Math.abs(a.el.currentTime - want) > AUDIO_DRIFT_S) a.el.currentTime = want;
      a.el.playbackRate = this.rate;
      const run = this.playing && !this._entering;
      if (run && a.el.paused) {
        a.el.play().then(
          () => {
            if (this.audioBlocked) {
              this.audioBlocked = false;
              this.onState();
            }
          },
          (err) => {
            if (err && err.name === "NotAllowedError" && !this.audioBlocked) {
              this.audioBlocked = true; // autoplay policy: the next click on Play unblocks it
              this.onState();
            }
          },
        );
      } else if (!run && !a.el.paused) {
        a.el.pause();
      }
    }
  }

  destroy() {
    this._running = false;
    this.video.pause();
    for (const a of this.audios) a.el.pause();
  }
}
