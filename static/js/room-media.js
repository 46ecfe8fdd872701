// The room page's media: video tiles for what this participant may see, and the buttons to
// send (the OR's camera and microphone, an expert's voice). Built on media.js.

import { part } from "./dom.js";
import { MediaSession } from "./media.js";

/** @typedef {import("./protocol.js").RoomConnection} RoomConnection */
/** @typedef {import("./media.js").TrackInfo} TrackInfo */

export class RoomMedia {
  /**
   * @param {HTMLElement} root  the page's #room element
   */
  constructor(root) {
    this.root = root;
    this.section = part(root, "media");
    this.tiles = part(root, "tiles");
    this.status = part(root, "media-status");
    this.preview = /** @type {HTMLVideoElement} */ (part(root, "local-preview"));
    this.videoButton = /** @type {HTMLButtonElement} */ (part(root, "publish-video"));
    this.audioButton = /** @type {HTMLButtonElement} */ (part(root, "publish-audio"));
    this.stopButton = /** @type {HTMLButtonElement} */ (part(root, "unpublish"));
    this.videoCodec = /** @type {"VP8" | "H264"} */ (root.dataset.videoCodec || "VP8");
    /** @type {MediaSession | null} */
    this.session = null;
    /** @type {MediaStream | null} */
    this.local = null;
    /** what we were sending, to send it again after a reconnect */
    /** @type {"video" | "audio" | null} */
    this.sending = null;
    /** counters for people and tests: how many tracks came and went */
    this.counts = { track_published: 0, track_ended: 0 };
    /** @type {Array<() => void>} */
    this._off = [];
    /** the microphone is on for good ("Talk to the room", or the OR sending sound) */
    this.openMic = false;
    /** @type {MediaStreamTrack | null} a microphone published for push-to-talk */
    this._mic = null;
    this._micPublished = false;
    /** @type {Promise<MediaStreamTrack | null> | null} */
    this._micPending = null;
    /** @type {Set<(tile: HTMLElement, info: TrackInfo, element: HTMLMediaElement) => void>} */
    this._tileListeners = new Set();
    /** @type {Set<(tile: HTMLElement) => void>} */
    this._goneListeners = new Set();
    /** @type {Set<() => void>} */
    this._publishListeners = new Set();
    this.videoButton.addEventListener("click", () => this.send("video"));
    this.audioButton.addEventListener("click", () => this.send("audio"));
    this.stopButton.addEventListener("click", () => this.stop());
  }

  /**
   * (Re)start media after a join: the server forgets a connection's media when it drops.
   * @param {RoomConnection} connection
   */
  async attach(connection) {
    this.detach();
    const me = connection.self;
    if (!me) return;
    const grants = new Set(me.grants);
    const session = (this.session = new MediaSession(connection, { videoCodec: this.videoCodec }));
    this._off = [
      connection.on("track_published", () => this.counts.track_published++),
      connection.on("track_ended", () => this.counts.track_ended++),
    ];
    this.videoButton.hidden = !grants.has("publish_video");
    this.audioButton.hidden = grants.has("publish_video") || !grants.has("publish_audio");
    this.section.hidden = false;
    if (grants.has("subscribe_video") || grants.has("subscribe_audio")) {
      await session.subscribe(
        (info, track) => this.show(info, track),
        (info) => this.remove(info.id),
      );
    }
    if (this.sending) await this.send(this.sending);
  }

  detach() {
    for (const off of this._off) off();
    this._off = [];
    if (this.session) this.session.close();
    this.session = null;
    this._micPublished = false;
    for (const tile of [...this.tiles.children]) {
      tile.remove();
      for (const listener of this._goneListeners) listener(/** @type {HTMLElement} */ (tile));
    }
  }

  /**
   * Call `listener` with each new tile (after it is in the page). Returns an unsubscriber.
   * @param {(tile: HTMLElement, info: TrackInfo, element: HTMLMediaElement) => void} listener
   * @returns {() => void}
   */
  onTile(listener) {
    this._tileListeners.add(listener);
    return () => this._tileListeners.delete(listener);
  }

  /**
   * Call `listener` whenever what this page publishes changes. Returns an unsubscriber.
   * @param {() => void} listener
   * @returns {() => void}
   */
  onPublished(listener) {
    this._publishListeners.add(listener);
    return () => this._publishListeners.delete(listener);
  }

  _publishedChanged() {
    for (const listener of this._publishListeners) listener();
  }

  /** @returns {string[]} ids of the tracks this page publishes now */
  publishedIds() {
    return this.session ? this.session.published.map((t) => t.id) : [];
  }

  /** @returns {MediaStreamTrack | null} the microphone being sent, if any */
  micTrack() {
    if (this._mic && this._micPublished) return this._mic;
    if (this.sending && this.local) return this.local.getAudioTracks()[0] || null;
    return null;
  }

  /**
   * The microphone track, published once (silent: `enabled` false) if it is not yet sent.
   * For push-to-talk, which only switches `enabled`.
   * @returns {Promise<MediaStreamTrack | null>}
   */
  async microphone() {
    const sent = this.micTrack();
    if (sent) return sent;
    if (this._micPending) return this._micPending;
    const session = this.session;
    if (!session) return null;
    this._micPending = (async () => {
      try {
        if (!this._mic || this._mic.readyState === "ended") {
          const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
          this._mic = stream.getAudioTracks()[0];
        }
        this._mic.enabled = false;
        await session.publish([{ track: this._mic, source: "microphone" }], new MediaStream([this._mic]));
        this._micPublished = true;
        this._publishedChanged();
        return this._mic;
      } catch (err) {
        const e = /** @type {any} */ (err);
        this.status.textContent = `Cannot use the microphone: ${e.code || e.name || ""} ${e.message || ""}`;
        return null;
      } finally {
        this._micPending = null;
      }
    })();
    return this._micPending;
  }

  /**
   * Mute or unmute the microphone being sent (the OR's "M"). Returns the new state.
   * @returns {boolean | null} true when live, false when muted, null without a microphone
   */
  toggleMute() {
    const track = this.micTrack();
    if (!track) return null;
    track.enabled = !track.enabled;
    this.openMic = track.enabled;
    this.root.dataset.muted = String(!track.enabled);
    return track.enabled;
  }

  /**
   * @param {"video" | "audio"} what
   */
  async send(what) {
    const session = this.session;
    if (!session) return;
    const grants = new Set(session.conn.self ? session.conn.self.grants : []);
    try {
      const wantVideo = what === "video";
      if (!wantVideo && this._mic && this._micPublished) {
        // the push-to-talk microphone is sent already: just leave it on
        this._mic.enabled = this.openMic = true;
        this.sending = what;
        this.videoButton.hidden = this.audioButton.hidden = true;
        this.stopButton.hidden = false;
        this.status.textContent = "Your microphone is on.";
        return;
      }
      this.status.textContent = "Starting…";
      const stream = (this.local =
        this.local ||
        (await navigator.mediaDevices.getUserMedia({
          video: wantVideo ? { width: 1280, height: 720, frameRate: 30 } : false,
          audio: grants.has("publish_audio"),
        })));
      /** @type {{track: MediaStreamTrack, source: string}[]} */
      const items = [];
      for (const track of stream.getVideoTracks()) items.push({ track, source: "laparoscope" });
      for (const track of stream.getAudioTracks()) items.push({ track, source: "microphone" });
      await session.publish(items, stream);
      this.sending = what;
      this.openMic = items.some((i) => i.track.kind === "audio");
      this.root.dataset.muted = "false";
      this._publishedChanged();
      if (wantVideo) {
        this.preview.srcObject = stream;
        this.preview.hidden = false;
      }
      this.videoButton.hidden = true;
      this.audioButton.hidden = true;
      this.stopButton.hidden = false;
      this.status.textContent = wantVideo ? "Sending video and sound." : "Your microphone is on.";
    } catch (err) {
      const e = /** @type {any} */ (err);
      this.status.textContent = `Cannot send: ${e.code || e.name || ""} ${e.message || ""}`;
    }
  }

  async stop() {
    if (this.session) await this.session.unpublish().catch(() => undefined);
    if (this.local) for (const track of this.local.getTracks()) track.stop();
    if (this._mic) this._mic.stop();
    this._mic = null;
    this._micPublished = false;
    this.local = null;
    this.sending = null;
    this.openMic = false;
    this._publishedChanged();
    this.preview.hidden = true;
    this.preview.srcObject = null;
    this.stopButton.hidden = true;
    const grants = new Set(this.session && this.session.conn.self ? this.session.conn.self.grants : []);
    this.videoButton.hidden = !grants.has("publish_video");
    this.audioButton.hidden = grants.has("publish_video") || !grants.has("publish_audio");
    this.status.textContent = "";
  }

  /**
   * @param {TrackInfo} info
   * @param {MediaStreamTrack} track
   */
  show(info, track) {
    this.remove(info.id);
    const tile = document.createElement("div");
    tile.className = "tile";
    tile.dataset.trackId = info.id;
    tile.dataset.source = info.source;
    tile.dataset.kind = info.kind;
    tile.dataset.testid = "tile";
    const element = document.createElement(info.kind === "video" ? "video" : "audio");
    element.autoplay = true;
    if (element instanceof HTMLVideoElement) {
      element.playsInline = true;
      element.muted = true; // the sound comes on its own audio track
    }
    element.srcObject = new MediaStream([track]);
    tile.append(element);
    if (info.kind === "video") {
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = `${info.source} · ${info.participant}`;
      tile.append(label);
    } else {
      tile.hidden = true;
    }
    this.tiles.append(tile);
    for (const listener of this._tileListeners) {
      try {
        listener(tile, info, element);
      } catch (err) {
        console.error("orbridge: tile listener failed", err);
      }
    }
  }

  /** @param {string} trackId */
  remove(trackId) {
    for (const tile of this.tiles.querySelectorAll(`[data-track-id="${CSS.escape(trackId)}"]`)) {
      tile.remove();
      for (const listener of this._goneListeners) listener(/** @type {HTMLElement} */ (tile));
    }
  }

  /**
   * Call `listener` with each tile taken away. Returns an unsubscriber.
   * @param {(tile: HTMLElement) => void} listener
   * @returns {() => void}
   */
  onTileGone(listener) {
    this._goneListeners.add(listener);
    return () => this._goneListeners.delete(listener);
  }
}
