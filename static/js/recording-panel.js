// The recording panel of the live consoles. Everyone in the room sees whether the session is
// being recorded (the patient's privacy and the team's trust depend on it); a participant with
// the `record` grant starts it (with the consent state) and stops it; experts and moderators
// mark chapters for the teaching library.

import { part } from "./dom.js";

/** @typedef {import("./protocol.js").RoomConnection} RoomConnection */

export class RecordingPanel {
  /**
   * @param {HTMLElement} section  the page's recording section
   * @param {RoomConnection} connection
   */
  constructor(section, connection) {
    this.section = section;
    this.connection = connection;
    this.indicator = part(section, "rec-indicator");
    this.status = part(section, "recording-status");
    this.startForm = /** @type {HTMLFormElement} */ (part(section, "record-form"));
    this.stopButton = /** @type {HTMLButtonElement} */ (part(section, "record-stop"));
    this.chapterForm = /** @type {HTMLFormElement} */ (part(section, "chapter-form"));
    /** @type {Set<string>} */
    this.grants = new Set();
    /** @type {{id: string, started_ms: number} | null} */
    this.recording = null;
    /** @type {number | undefined} */
    this.timer = undefined;
    connection.on("recording_started", (/** @type {any} */ r) => this.show(r));
    connection.on("recording_stopped", (/** @type {any} */ r) => {
      this.show(null);
      this.say(r.reason === "stopped" ? "Recording saved." : `Recording ended (${r.reason}).`);
    });
    connection.on("recording_error", (/** @type {any} */ e) => {
      this.section.dataset.error = e.code;
      this.say(`Recording problem: ${e.message} (${e.code})`);
    });
    connection.on("chapter_marked", (/** @type {any} */ c) => this.say(`Chapter marked: ${c.title}`));
    this.startForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.start().catch(() => undefined);
    });
    this.stopButton.addEventListener("click", () => {
      this.stop().catch(() => undefined);
    });
    this.chapterForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.mark().catch(() => undefined);
    });
  }

  /** @param {any} snapshot */
  joined(snapshot) {
    this.grants = new Set((snapshot.self && snapshot.self.grants) || []);
    this.section.hidden = false;
    this.show(snapshot.recording || null);
  }

  /** @param {{id: string, started_ms: number} | null} recording */
  show(recording) {
    this.recording = recording;
    const on = !!recording;
    this.section.dataset.state = on ? "recording" : "off";
    this.indicator.dataset.state = on ? "recording" : "off";
    const mayRecord = this.grants.has("record");
    this.startForm.hidden = on || !mayRecord;
    this.stopButton.hidden = !on || !mayRecord;
    this.chapterForm.hidden = !on || !(mayRecord || this.grants.has("annotate"));
    window.clearInterval(this.timer);
    if (recording) {
      const tick = () => {
        const seconds = Math.max(0, Math.floor((Date.now() - recording.started_ms) / 1000));
        const mm = String(Math.floor(seconds / 60)).padStart(2, "0");
        const ss = String(seconds % 60).padStart(2, "0");
        this.indicator.textContent = `● Recording ${mm}:${ss}`;
      };
      tick();
      this.timer = window.setInterval(tick, 1000);
    } else {
      this.indicator.textContent = "Not recording";
    }
  }

  async start() {
    const data = new FormData(this.startForm);
    const text = (/** @type {string} */ name) => String(data.get(name) || "").trim();
    const tags = text("tags").split(",").map((t) => t.trim()).filter(Boolean);
    try {
      const recording = await this.connection.request("start_recording", {
        consent: text("consent"),
        procedure: text("procedure"),
        hospital: text("hospital"),
        tags,
      });
      this.show(recording);
      this.say("Recording started.");
    } catch (err) {
      this.fail(err);
    }
  }

  async stop() {
    try {
      await this.connection.request("stop_recording", {});
    } catch (err) {
      this.fail(err);
    }
  }

  async mark() {
    const input = /** @type {HTMLInputElement} */ (part(this.chapterForm, "chapter-title"));
    const title = input.value.trim();
    if (!title) return;
    try {
      await this.connection.request("mark_chapter", { title });
      input.value = "";
    } catch (err) {
      this.fail(err);
    }
  }

  /** @param {string} text */
  say(text) {
    this.status.textContent = text;
  }

  /** @param {any} err */
  fail(err) {
    this.say(`${err && err.message ? err.message : err}${err && err.code ? ` (${err.code})` : ""}`);
  }
}
