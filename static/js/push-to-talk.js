// Push-to-talk: hold the button (or Space) to talk. The microphone is published once, on the
// first press, and then only its track's `enabled` is switched while the button is held.

import { isTyping } from "./annotate-tools.js";

/** @typedef {import("./room-media.js").RoomMedia} RoomMedia */

export class PushToTalk {
  /**
   * @param {HTMLButtonElement} button  the [data-testid=ptt] button
   * @param {RoomMedia} media
   */
  constructor(button, media) {
    this.button = button;
    this.media = media;
    this.talking = false;
    /** @type {boolean | null} the track's state before the press (an open mic stays open) */
    this._before = null;
    /** @type {MediaStreamTrack | null} */
    this._track = null;
    const down = (/** @type {PointerEvent} */ e) => {
      e.preventDefault();
      button.setPointerCapture(e.pointerId); // held until released, wherever the pointer goes
      this.press();
    };
    const up = () => this.release();
    button.addEventListener("pointerdown", down);
    button.addEventListener("pointerup", up);
    button.addEventListener("pointercancel", up);
    button.addEventListener("lostpointercapture", up);
    this._keydown = (/** @type {KeyboardEvent} */ e) => {
      if (e.code !== "Space" || e.repeat || isTyping(e.target)) return;
      e.preventDefault();
      this.press();
    };
    this._keyup = (/** @type {KeyboardEvent} */ e) => {
      if (e.code !== "Space") return;
      e.preventDefault();
      this.release();
    };
    document.addEventListener("keydown", this._keydown);
    document.addEventListener("keyup", this._keyup);
    window.addEventListener("blur", up);
  }

  async press() {
    if (this.talking) return;
    this.talking = true;
    this._show();
    const track = await this.media.microphone();
    if (!track) {
      this.talking = false;
      this._show();
      return;
    }
    this._track = track;
    if (this._before === null) this._before = track.enabled && this.media.openMic;
    track.enabled = this.talking; // released meanwhile: stay silent
  }

  release() {
    if (!this.talking) return;
    this.talking = false;
    if (this._track) this._track.enabled = this.media.openMic;
    this._before = null;
    this._show();
  }

  _show() {
    this.button.setAttribute("aria-pressed", String(this.talking));
    this.button.dataset.talking = String(this.talking);
    const label = this.button.querySelector("[data-part=label]") || this.button;
    label.textContent = this.talking ? "Talking… (release to stop)" : "Hold to talk (Space)";
  }

  destroy() {
    document.removeEventListener("keydown", this._keydown);
    document.removeEventListener("keyup", this._keyup);
  }
}
