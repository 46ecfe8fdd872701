// An annotation overlay on every received video tile, and the laparoscope's frame clock and
// freeze-frame for drawing on it. Used by the expert and trainee consoles.

import { OverlayCanvas } from "./overlay.js";
import { FrameClock } from "./frame-clock.js";
import { FreezeFrame } from "./freeze-frame.js";

/** @typedef {import("./room-media.js").RoomMedia} RoomMedia */
/** @typedef {import("./annotation-store.js").AnnotationStore} AnnotationStore */
/** @typedef {import("./media.js").TrackInfo} TrackInfo */

/**
 * @typedef {object} VideoTile
 * @property {HTMLElement} tile
 * @property {TrackInfo} info
 * @property {HTMLVideoElement} video
 * @property {OverlayCanvas} overlay
 * @property {FrameClock} clock
 * @property {FreezeFrame} freeze
 * @property {string} trackId
 */

export class TileOverlays {
  /**
   * @param {RoomMedia} media
   * @param {AnnotationStore} store
   */
  constructor(media, store) {
    /** @type {Map<HTMLElement, VideoTile>} */
    this.tiles = new Map();
    /** @type {VideoTile | null} the laparoscope (else the first video): what experts draw on */
    this.main = null;
    /** @type {Set<(main: VideoTile | null) => void>} */
    this._listeners = new Set();
    this._off = [
      media.onTile((tile, info, element) => {
        if (!(element instanceof HTMLVideoElement)) return;
        const clock = new FrameClock(element);
        /** @type {VideoTile} */
        const entry = {
          tile,
          info,
          video: element,
          overlay: new OverlayCanvas(element, store, (a) => a.track_id === info.id),
          clock,
          freeze: new FreezeFrame(element, clock),
          trackId: info.id,
        };
        this.tiles.set(tile, entry);
        this._pickMain();
      }),
      media.onTileGone((tile) => {
        const entry = this.tiles.get(tile);
        if (!entry) return;
        entry.overlay.destroy();
        entry.clock.stop();
        this.tiles.delete(tile);
        this._pickMain();
      }),
    ];
  }

  _pickMain() {
    const all = [...this.tiles.values()];
    const main = all.find((t) => t.info.source === "laparoscope") || all[0] || null;
    for (const t of all) t.tile.classList.toggle("is-main", t === main);
    if (main === this.main) return;
    this.main = main;
    for (const listener of this._listeners) listener(main);
  }

  /**
   * @param {(main: VideoTile | null) => void} listener
   * @returns {() => void}
   */
  onMain(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }
}
