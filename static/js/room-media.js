// The room page's media: video tiles for what this participant may see, and the buttons to
// send (the OR's camera and microphone, an expert's voice). Built on media.js.

import { MediaSession } from "./media.js";

/** @typedef {import("./protocol.js").RoomConnection} RoomConnection */
/** @typedef {import("./media.js").TrackInfo} TrackInfo */

/**
 * @param {HTMLElement} root
 * @param {string} testid
 */
function part(root, testid) {
  const el = root.querySelector(`[data-testid="${testid}"]`);
  if (!el) throw new Error(`missing element ${testid}`);
  return /** @type {HTMLElement} */ (el);
}

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
    this.tiles.replaceChildren();
  }

  /**
   * @param {"video" | "audio"} what
   */
  async send(what) {
    const session = this.session;
    if (!session) return;
    const grants = new Set(session.conn.self ? session.conn.self.grants : []);
    try {
      this.status.textContent = "Starting…";
      const wantVideo = what === "video";
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
    this.local = null;
    this.sending = null;
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
  }

  /** @param {string} trackId */
  remove(trackId) {
    for (const tile of this.tiles.querySelectorAll(`[data-track-id="${CSS.escape(trackId)}"]`)) {
      tile.remove();
    }
  }
}
