// Freeze-frame: pause a live <video> on the frame it shows (a paused MediaStream video keeps
// showing it), remember which frame that is, and go back to live.

/** @typedef {import("./frame-clock.js").FrameClock} FrameClock */
/** @typedef {import("./frame-clock.js").FrameRef} FrameRef */

export class FreezeFrame {
  /**
   * @param {HTMLVideoElement} video
   * @param {FrameClock} clock
   */
  constructor(video, clock) {
    this.video = video;
    this.clock = clock;
    this.frozen = false;
    /** @type {FrameRef | undefined} the frozen frame */
    this.frame = undefined;
    /** @type {Set<(frozen: boolean) => void>} */
    this._listeners = new Set();
  }

  freeze() {
    if (this.frozen) return;
    this.video.pause();
    this.frame = this.clock.current();
    this.frozen = true;
    this._changed();
  }

  async resume() {
    if (!this.frozen) return;
    this.frozen = false;
    this.frame = undefined;
    this._changed();
    try {
      await this.video.play();
    } catch (err) {
      console.warn("orbridge: cannot resume the video", err);
    }
  }

  toggle() {
    if (this.frozen) this.resume();
    else this.freeze();
  }

  /** @returns {FrameRef | undefined} the frame an annotation drawn now is on */
  currentFrame() {
    return this.frozen ? this.frame : this.clock.current();
  }

  /**
   * @param {(frozen: boolean) => void} listener
   * @returns {() => void}
   */
  onChange(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  _changed() {
    for (const listener of this._listeners) listener(this.frozen);
  }
}
