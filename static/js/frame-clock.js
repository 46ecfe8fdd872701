// Which frame a <video> shows right now: requestVideoFrameCallback's metadata of the latest
// presented frame (for WebRTC video, with the frame's RTP timestamp).

/**
 * @typedef {object} FrameRef  the frame an annotation was drawn on
 * @property {number} [rtp_timestamp]  uint32
 * @property {number} [media_time]  seconds
 */

export class FrameClock {
  /** @param {HTMLVideoElement} video */
  constructor(video) {
    this.video = video;
    /** @type {FrameRef | null} */
    this.latest = null;
    this.frames = 0;
    this._handle = 0;
    this._stopped = false;
    this._schedule();
  }

  _schedule() {
    if (this._stopped || !("requestVideoFrameCallback" in this.video)) return;
    this._handle = this.video.requestVideoFrameCallback((_now, metadata) => {
      /** @type {FrameRef} */
      const ref = { media_time: metadata.mediaTime };
      const rtp = /** @type {any} */ (metadata).rtpTimestamp;
      if (typeof rtp === "number") ref.rtp_timestamp = rtp >>> 0;
      this.latest = ref;
      this.frames++;
      this._schedule();
    });
  }

  /** @returns {FrameRef | undefined} the frame on screen, if known */
  current() {
    return this.latest ? { ...this.latest } : undefined;
  }

  stop() {
    this._stopped = true;
    if (this._handle && "cancelVideoFrameCallback" in this.video) this.video.cancelVideoFrameCallback(this._handle);
  }
}
