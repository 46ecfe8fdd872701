// The expert console (experts and moderators): the OR's video with the drawing tools on the
// laparoscope, freeze-frame, push-to-talk, vitals, and the live delay of the video.
// The trainee console is the same page without the tools (`tools: false`).

import { part } from "./dom.js";
import { AnnotationStore } from "./annotation-store.js";
import { AnnotateTools } from "./annotate-tools.js";
import { TileOverlays } from "./tile-overlays.js";
import { VitalsPanel } from "./vitals-panel.js";
import { LatencyMeter, qualityReporter } from "./latency-meter.js";
import { PushToTalk } from "./push-to-talk.js";

/** @typedef {import("./protocol.js").RoomConnection} RoomConnection */
/** @typedef {import("./room-media.js").RoomMedia} RoomMedia */
/** @typedef {import("./tile-overlays.js").VideoTile} VideoTile */

export class ExpertConsole {
  /**
   * @param {HTMLElement} root  the page's #room element
   * @param {RoomMedia} media
   * @param {RoomConnection} connection
   * @param {{tools?: boolean}} [options]  tools: false for the watch-only trainee view
   */
  constructor(root, media, connection, options = {}) {
    this.root = root;
    this.media = media;
    this.connection = connection;
    this.withTools = options.tools !== false;
    this.kind = this.withTools ? "expert" : "trainee";
    this.store = new AnnotationStore();
    this.store.follow(connection);
    this.overlays = new TileOverlays(media, this.store);
    this.vitals = new VitalsPanel(part(root, "vitals"), part(root, "alarm-banner"));
    this.vitals.follow(connection);
    part(root, "link-section").hidden = false;
    const latency = part(root, "latency");
    latency.querySelector("[data-part=label]")?.replaceChildren("Video delay (network + buffer):");
    this.latency = new LatencyMeter(latency, () => (media.session ? media.session.subscriber : null), "receive", qualityReporter(connection));
    /** @type {AnnotateTools | null} */
    this.tools = null;
    /** @type {PushToTalk | null} */
    this.ptt = null;
    if (this.withTools) this._setUpTools();
    const keys = this.withTools
      ? "P pen · A arrow · C circle · T text · L pointer · F freeze · Z undo · hold Space to talk"
      : "";
    if (keys) {
      part(root, "shortcuts-text").textContent = keys;
      part(root, "shortcuts").hidden = false;
    }
  }

  _setUpTools() {
    const toolbar = part(this.root, "annotate-toolbar");
    const tools = (this.tools = new AnnotateTools(toolbar, this.connection));
    const freeze = /** @type {HTMLButtonElement} */ (part(toolbar, "freeze"));
    /** @type {() => void} */
    let offFreeze = () => undefined;
    const showFreeze = (/** @type {boolean} */ frozen) => {
      freeze.setAttribute("aria-pressed", String(frozen));
      freeze.replaceChildren(frozen ? "Back to live " : "Freeze frame ", kbd("F"));
      this.root.dataset.frozen = String(frozen);
      const main = this.overlays.main;
      if (main) main.tile.classList.toggle("is-frozen", frozen);
    };
    this.overlays.onMain((main) => {
      offFreeze();
      tools.setTarget(main);
      toolbar.hidden = !main;
      showFreeze(!!main && main.freeze.frozen);
      if (main) offFreeze = main.freeze.onChange(showFreeze);
    });
    freeze.addEventListener("click", () => {
      if (this.overlays.main) this.overlays.main.freeze.toggle();
    });
    const ptt = /** @type {HTMLButtonElement} */ (part(this.root, "ptt"));
    this.ptt = new PushToTalk(ptt, this.media);
  }

  /**
   * After every join: the overlay and vitals as the snapshot has them.
   * @param {any} snapshot
   */
  joined(snapshot) {
    const grants = new Set((snapshot.self && snapshot.self.grants) || []);
    this.store.reset(snapshot.overlay);
    if (grants.has("subscribe_vitals")) this.vitals.reset(snapshot.vitals);
    if (this.tools) this.tools.setGrants([...grants]);
    if (this.ptt) this.ptt.button.hidden = !grants.has("publish_audio");
  }
}

/** @param {string} key */
function kbd(key) {
  const el = document.createElement("kbd");
  el.textContent = key;
  return el;
}
