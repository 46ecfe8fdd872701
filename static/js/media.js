// Media over the orbridge protocol (docs/protocol.md, "Media"): a publisher connection the
// browser offers, and a subscriber connection the server offers. No trickle ICE: every SDP
// is sent with its candidates gathered.

/**
 * @typedef {object} TrackInfo  a track as the server describes it
 * @property {string} id
 * @property {string} participant
 * @property {string} source  laparoscope | room-camera | microphone | screen | camera
 * @property {"audio" | "video"} kind
 * @property {string} codec
 *
 * @typedef {object} MediaOptions
 * @property {RTCIceServer[]} [iceServers]  default []: no STUN unless configured
 * @property {"VP8" | "H264"} [videoCodec]  what the server forwards (default VP8)
 * @property {number} [gatherTimeout]  milliseconds to wait for ICE gathering (default 5000)
 */

const GATHER_TIMEOUT_MS = 5000;

/**
 * Resolve once the connection has gathered its candidates (or after `timeout` ms).
 * @param {RTCPeerConnection} pc
 * @param {number} timeout
 */
function gathered(pc, timeout) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      clearTimeout(timer);
      resolve(undefined);
    };
    const timer = setTimeout(() => {
      pc.removeEventListener("icegatheringstatechange", done);
      resolve(undefined);
    }, timeout);
    pc.addEventListener("icegatheringstatechange", done);
  });
}

/**
 * Put `codec` (and its RTX) first, so both legs of the server's forwarding match.
 * @param {RTCRtpTransceiver} transceiver
 * @param {"audio" | "video"} kind
 * @param {string} codec
 */
function preferCodec(transceiver, kind, codec) {
  const caps = RTCRtpReceiver.getCapabilities(kind);
  if (!caps || !transceiver.setCodecPreferences) return;
  const mime = `${kind}/${codec}`.toLowerCase();
  const wanted = caps.codecs.filter((c) => c.mimeType.toLowerCase() === mime);
  const rtx = caps.codecs.filter((c) => c.mimeType.toLowerCase() === `${kind}/rtx`);
  if (wanted.length) transceiver.setCodecPreferences([...wanted, ...rtx]);
}

export class MediaSession {
  /**
   * @param {import("./protocol.js").RoomConnection} conn
   * @param {MediaOptions} [options]
   */
  constructor(conn, options = {}) {
    this.conn = conn;
    this.iceServers = options.iceServers || [];
    this.videoCodec = options.videoCodec || "VP8";
    this.gatherTimeout = options.gatherTimeout || GATHER_TIMEOUT_MS;
    /** @type {RTCPeerConnection | null} */
    this.publisher = null;
    /** @type {RTCPeerConnection | null} */
    this.subscriber = null;
    /** @type {TrackInfo[]} */
    this.published = [];
    /** @type {Map<string, TrackInfo>} mid of the subscriber connection -> track */
    this.byMid = new Map();
    /** @type {Map<string, MediaStreamTrack>} track id -> the receiving MediaStreamTrack */
    this.received = new Map();
    /** serializes subscriber offers: one answered at a time, in order */
    this._offers = Promise.resolve();
    /** @type {Set<(info: TrackInfo, track: MediaStreamTrack) => void>} */
    this._onTrack = new Set();
    /** @type {Set<(info: TrackInfo, reason: string) => void>} */
    this._onEnded = new Set();
    /** @type {Array<() => void>} unsubscribers: a closed session hears nothing more */
    this._off = [conn.on("track_ended", (/** @type {any} */ payload) => this._ended(payload))];
  }

  /**
   * Publish tracks (each with its source label) in one offer.
   * @param {{track: MediaStreamTrack, source: string}[]} items
   * @param {MediaStream} [stream]
   * @returns {Promise<TrackInfo[]>}
   */
  async publish(items, stream) {
    const pc = this.publisher || (this.publisher = new RTCPeerConnection({ iceServers: this.iceServers }));
    const added = items.map(({ track, source }) => {
      const transceiver = pc.addTransceiver(track, {
        direction: "sendonly",
        streams: stream ? [stream] : [],
      });
      preferCodec(transceiver, /** @type {"audio"|"video"} */ (track.kind), track.kind === "video" ? this.videoCodec : "opus");
      return { transceiver, source };
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, this.gatherTimeout);
    const answer = await this.conn.request("publish", {
      sdp: pc.localDescription ? pc.localDescription.sdp : "",
      tracks: added.map(({ transceiver, source }) => ({ mid: transceiver.mid, source })),
    });
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    this.published.push(...answer.tracks);
    return answer.tracks;
  }

  /** Stop publishing everything and close the publisher connection. */
  async unpublish() {
    const answer = await this.conn.request("unpublish", {});
    if (this.publisher) this.publisher.close();
    this.publisher = null;
    this.published = [];
    return answer.ended;
  }

  /**
   * Receive every track this participant may see.
   * @param {(info: TrackInfo, track: MediaStreamTrack) => void} onTrack
   * @param {(info: TrackInfo, reason: string) => void} [onEnded]
   * @returns {Promise<TrackInfo[]>} the tracks that will be offered now
   */
  async subscribe(onTrack, onEnded) {
    this._onTrack.add(onTrack);
    if (onEnded) this._onEnded.add(onEnded);
    this._off.push(
      this.conn.on("subscriber_offer", (/** @type {any} */ offer) => {
        this._offers = this._offers.then(() => this._answer(offer)).catch((err) => {
          console.error("orbridge: subscriber offer failed", err);
        });
      }),
    );
    const answer = await this.conn.request("subscribe");
    return answer.tracks;
  }

  /** @param {{sdp: string, tracks: {mid: string, track: TrackInfo}[]}} offer */
  async _answer(offer) {
    let pc = this.subscriber;
    if (!pc) {
      pc = this.subscriber = new RTCPeerConnection({ iceServers: this.iceServers });
      pc.addEventListener("track", (event) => {
        const mid = event.transceiver.mid || "";
        const info = this.byMid.get(mid);
        if (!info) return;
        this.received.set(info.id, event.track);
        for (const listener of this._onTrack) listener(info, event.track);
      });
    }
    for (const { mid, track } of offer.tracks) this.byMid.set(mid, track);
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc, this.gatherTimeout);
    await this.conn.request("subscriber_answer", { sdp: pc.localDescription ? pc.localDescription.sdp : "" });
  }

  /** @param {{track: TrackInfo, reason: string}} payload */
  _ended(payload) {
    if (!payload || !payload.track) return;
    this.received.delete(payload.track.id);
    for (const listener of this._onEnded) listener(payload.track, payload.reason);
  }

  /**
   * Inbound video statistics of the subscriber connection, by track id.
   * @returns {Promise<Record<string, {framesDecoded: number, framesPerSecond: number, jitterBufferDelay: number}>>}
   */
  async videoStats() {
    /** @type {Record<string, any>} */
    const out = {};
    if (!this.subscriber) return out;
    const report = await this.subscriber.getStats();
    report.forEach((stat) => {
      if (stat.type !== "inbound-rtp" || stat.kind !== "video") return;
      const info = this.byMid.get(stat.mid || "");
      out[info ? info.id : stat.id] = {
        framesDecoded: stat.framesDecoded || 0,
        framesPerSecond: stat.framesPerSecond || 0,
        jitterBufferDelay: stat.jitterBufferDelay || 0,
      };
    });
    return out;
  }

  /** Inbound audio statistics: how much audio this client has received and played. */
  async audioStats() {
    let packets = 0;
    let samples = 0;
    if (!this.subscriber) return { packetsReceived: 0, totalSamplesReceived: 0 };
    const report = await this.subscriber.getStats();
    report.forEach((stat) => {
      if (stat.type === "inbound-rtp" && stat.kind === "audio") {
        packets += stat.packetsReceived || 0;
        samples += stat.totalSamplesReceived || 0;
      }
    });
    return { packetsReceived: packets, totalSamplesReceived: samples };
  }

  close() {
    for (const off of this._off) off();
    this._off = [];
    for (const pc of [this.publisher, this.subscriber]) if (pc) pc.close();
    this.publisher = this.subscriber = null;
  }
}
