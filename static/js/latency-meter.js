// The receive path delay of the live video, from getStats: half the round trip of the
// selected candidate pair (network) plus the jitter buffer's average delay over the last
// interval (buffer). Shown with a word and a colour: ok, warn above 300 ms, alarm above 400 ms.

export const WARN_MS = 300;
export const ALARM_MS = 400;

/**
 * @typedef {object} PathDelay
 * @property {number | null} rtt_ms  round trip of the selected candidate pair
 * @property {number | null} buffer_ms  jitter buffer delay per emitted frame, last interval
 * @property {number | null} total_ms  rtt/2 + buffer
 */

/**
 * @param {number} ms
 * @returns {"ok" | "warn" | "alarm"}
 */
export function delayLevel(ms) {
  return ms > ALARM_MS ? "alarm" : ms > WARN_MS ? "warn" : "ok";
}

/** @param {RTCStatsReport} report */
function roundTrip(report) {
  /** @type {number | null} */
  let rtt = null;
  report.forEach((s) => {
    if (s.type === "candidate-pair" && s.state === "succeeded" && (s.nominated || rtt === null)) {
      if (typeof s.currentRoundTripTime === "number") rtt = s.currentRoundTripTime * 1000;
    }
  });
  return rtt;
}

/**
 * The presence `quality` a measured delay means.
 * @param {number} ms
 * @returns {"good" | "fair" | "poor"}
 */
export function qualityOf(ms) {
  return ms > ALARM_MS ? "poor" : ms > 150 ? "fair" : "good";
}

/**
 * Tell the room this client's link quality when it changes (`update {quality}`).
 * @param {import("./protocol.js").RoomConnection} connection
 * @returns {(ms: number) => void}
 */
export function qualityReporter(connection) {
  /** @type {string | null} */
  let said = null;
  return (ms) => {
    const quality = qualityOf(ms);
    if (quality === said || connection.state !== "joined") return;
    said = quality;
    connection.update({ quality }).catch(() => {
      said = null;
    });
  };
}

export class LatencyMeter {
  /**
   * @param {HTMLElement} el  the [data-testid=latency] element; gets data-level and data-ms
   * @param {() => RTCPeerConnection | null} peer  which connection to measure, asked each time
   * @param {"receive" | "send"} direction  receive: network + buffer; send: round trip only
   * @param {(ms: number) => void} [onMeasure]  called with each measurement shown
   */
  constructor(el, peer, direction = "receive", onMeasure) {
    this.onMeasure = onMeasure;
    this.el = el;
    this.peer = peer;
    this.direction = direction;
    /** @type {PathDelay} */
    this.last = { rtt_ms: null, buffer_ms: null, total_ms: null };
    /** @type {{delay: number, emitted: number} | null} */
    this._prev = null;
    this._timer = setInterval(() => this.poll().catch(() => undefined), 1000);
  }

  /** @returns {Promise<PathDelay>} */
  async poll() {
    const pc = this.peer();
    if (!pc) {
      this.show({ rtt_ms: null, buffer_ms: null, total_ms: null });
      return this.last;
    }
    const report = await pc.getStats();
    const rtt = roundTrip(report);
    /** @type {number | null} */
    let buffer = null;
    if (this.direction === "receive") {
      let delay = 0;
      let emitted = 0;
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          delay += s.jitterBufferDelay || 0;
          emitted += s.jitterBufferEmittedCount || 0;
        }
      });
      const prev = this._prev;
      if (prev && emitted > prev.emitted) buffer = ((delay - prev.delay) / (emitted - prev.emitted)) * 1000;
      else if (emitted > 0) buffer = (delay / emitted) * 1000;
      this._prev = { delay, emitted };
    }
    const total = rtt === null && buffer === null ? null : (rtt || 0) / 2 + (buffer || 0);
    this.show({ rtt_ms: rtt, buffer_ms: buffer, total_ms: total });
    return this.last;
  }

  /** @param {PathDelay} d */
  show(d) {
    this.last = d;
    const value = /** @type {HTMLElement} */ (this.el.querySelector("[data-part=value]") || this.el);
    if (d.total_ms === null) {
      value.textContent = "not measured yet";
      this.el.dataset.level = "unknown";
      delete this.el.dataset.ms;
      return;
    }
    const ms = Math.round(this.direction === "receive" ? d.total_ms : d.rtt_ms || 0);
    const level = delayLevel(ms);
    const word = level === "alarm" ? "TOO SLOW" : level === "warn" ? "slow" : "ok";
    value.textContent =
      this.direction === "receive"
        ? `${ms} ms (${word}; round trip ${Math.round(d.rtt_ms || 0)} ms, buffer ${Math.round(d.buffer_ms || 0)} ms)`
        : `${ms} ms round trip (${word})`;
    this.el.dataset.level = level;
    this.el.dataset.ms = String(ms);
    if (this.onMeasure) this.onMeasure(ms);
  }

  stop() {
    clearInterval(this._timer);
  }
}
