// The OR console (surgeon): the preview of what is sent with the experts' drawings on it,
// the experts' voices, the link, who is watching, and large targets with keys for a gloved
// circulating nurse (V camera on/off, M mute).

import { AnnotationStore } from "./annotation-store.js";
import { OverlayCanvas } from "./overlay.js";
import { VitalsPanel } from "./vitals-panel.js";
import { LatencyMeter, qualityReporter } from "./latency-meter.js";
import { isTyping } from "./annotate-tools.js";
import { part } from "./dom.js";
import { ROLE_LABELS } from "./presence-view.js";

/** @typedef {import("./protocol.js").RoomConnection} RoomConnection */
/** @typedef {import("./room-media.js").RoomMedia} RoomMedia */

export class OrConsole {
  /**
   * @param {HTMLElement} root  the page's #room element
   * @param {RoomMedia} media
   * @param {RoomConnection} connection
   */
  constructor(root, media, connection) {
    this.root = root;
    this.media = media;
    this.connection = connection;
    this.kind = "or";
    this.store = new AnnotationStore();
    this.store.follow(connection);
    // the drawings on any track this page publishes (the laparoscope) go over its preview
    /** @type {Set<string>} */
    let mine = new Set();
    this.overlay = new OverlayCanvas(media.preview, this.store, (a) => mine.has(a.track_id));
    media.onPublished(() => {
      mine = new Set(media.publishedIds());
      this.overlay.redraw();
    });
    this.vitals = new VitalsPanel(part(root, "vitals"), part(root, "alarm-banner"));
    this.vitals.follow(connection);

    part(root, "link-section").hidden = false;
    const latency = part(root, "latency");
    latency.querySelector("[data-part=label]")?.replaceChildren("Link to the server:");
    this.latency = new LatencyMeter(latency, () => (media.session ? media.session.publisher : null), "send", qualityReporter(connection));
    this.annotationLatency = part(root, "annotation-latency");
    this.store.onChange(() => this._showAnnotationLatency());

    this.watchers = part(root, "watchers");
    part(root, "watchers-section").hidden = false;
    connection.participants.onChange(() => this._renderWatchers());

    this.mute = /** @type {HTMLButtonElement} */ (part(root, "mute"));
    this.mute.addEventListener("click", () => this._toggleMute());
    media.onPublished(() => this._showMute());
    part(root, "shortcuts-text").textContent = "V camera on/off · M microphone mute";
    part(root, "shortcuts").hidden = false;
    this._onKey = (/** @type {KeyboardEvent} */ e) => this._key(e);
    document.addEventListener("keydown", this._onKey);
  }

  /** @param {any} snapshot */
  joined(snapshot) {
    const grants = new Set((snapshot.self && snapshot.self.grants) || []);
    this.store.reset(snapshot.overlay);
    if (grants.has("subscribe_vitals")) this.vitals.reset(snapshot.vitals);
    this._renderWatchers();
  }

  _showAnnotationLatency() {
    const last = this.store.latencies[this.store.latencies.length - 1];
    if (!last) return;
    part(this.root, "annotation-latency-line").hidden = false;
    this.annotationLatency.textContent = `${Math.round(last.latency_ms)} ms`;
    this.annotationLatency.dataset.ms = String(last.latency_ms);
  }

  _renderWatchers() {
    const me = this.connection.self ? this.connection.self.identity : null;
    const others = this.connection.participants.list().filter((p) => p.identity !== me && p.role !== "device");
    if (!others.length) {
      const empty = document.createElement("li");
      empty.className = "nobody";
      empty.textContent = "Nobody is watching yet.";
      this.watchers.replaceChildren(empty);
      return;
    }
    this.watchers.replaceChildren(
      ...others.map((p) => {
        const li = document.createElement("li");
        li.dataset.testid = "watcher";
        li.dataset.identity = p.identity;
        li.dataset.role = p.role;
        const name = document.createElement("strong");
        name.textContent = p.name;
        const role = document.createElement("span");
        role.className = `role role-${p.role}`;
        role.textContent = ROLE_LABELS[p.role] || p.role;
        li.append(name, " ", role);
        return li;
      }),
    );
  }

  _toggleMute() {
    const live = this.media.toggleMute();
    if (live === null) this.media.status.textContent = "The microphone is not on.";
    this._showMute();
  }

  _showMute() {
    const track = this.media.micTrack();
    this.mute.hidden = !track;
    const muted = !!track && !track.enabled;
    this.mute.setAttribute("aria-pressed", String(muted));
    this.mute.textContent = muted ? "Microphone OFF: unmute (M)" : "Mute microphone (M)";
    this.mute.classList.toggle("is-muted", muted);
  }

  /** @param {KeyboardEvent} e */
  _key(e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat || isTyping(e.target)) return;
    const key = e.key.toLowerCase();
    if (key === "v") {
      e.preventDefault();
      if (this.media.sending === "video") this.media.stop();
      else if (!this.media.videoButton.hidden) this.media.send("video");
    } else if (key === "m") {
      e.preventDefault();
      this._toggleMute();
    }
  }
}
