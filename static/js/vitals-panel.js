// The vitals panel: the latest numerics (snapshot `vitals.numerics`, then `vitals` events),
// the ECG strip, and active alarms in an unmistakable red banner (role="alert").

import { EcgStrip } from "./ecg-strip.js";

/** @typedef {import("./protocol.js").RoomConnection} RoomConnection */

/**
 * @typedef {object} Numeric
 * @property {string} kind
 * @property {number} value
 * @property {string} [unit]
 * @property {number} [time_ms]
 *
 * @typedef {object} Alarm
 * @property {string} id
 * @property {string} kind
 * @property {string} [label]
 * @property {"low" | "high"} condition
 * @property {number} limit
 * @property {number} value
 * @property {string} [unit]
 */

/** What each numeric shows as: its tile's test id, label and unit. */
const DISPLAY = {
  hr: { testid: "vitals-hr", label: "HR", unit: "/min" },
  spo2: { testid: "vitals-spo2", label: "SpO₂", unit: "%" },
  nibp: { testid: "vitals-nibp", label: "NIBP", unit: "mmHg" },
  rr: { testid: "vitals-rr", label: "RR", unit: "/min" },
  temp: { testid: "vitals-temp", label: "Temp", unit: "°C" },
  etco2: { testid: "vitals-etco2", label: "EtCO₂", unit: "mmHg" },
};

/** @param {number} v */
function fmt(v) {
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

export class VitalsPanel {
  /**
   * @param {HTMLElement} root  the [data-testid=vitals] section
   * @param {HTMLElement} banner  the [data-testid=alarm-banner] element (role="alert")
   * @param {import("./ecg-strip.js").EcgOptions} [ecgOptions]  replay passes its clock
   */
  constructor(root, banner, ecgOptions = {}) {
    this.root = root;
    /** @type {Map<string, Numeric>} */
    this.latest = new Map();
    /** @type {Map<string, Alarm>} */
    this.alarms = new Map();
    /** @type {Map<string, HTMLElement>} value element by display key */
    this._values = new Map();
    const grid = /** @type {HTMLElement} */ (root.querySelector('[data-testid="vitals-numerics"]'));
    for (const [key, d] of Object.entries(DISPLAY)) {
      const tile = document.createElement("div");
      tile.className = `vital vital-${key}`;
      tile.dataset.kind = key;
      const label = document.createElement("span");
      label.className = "vital-label";
      label.textContent = d.label;
      const value = document.createElement("span");
      value.className = "vital-value";
      value.dataset.testid = d.testid;
      value.textContent = "--";
      const unit = document.createElement("span");
      unit.className = "vital-unit";
      unit.textContent = d.unit;
      tile.append(label, value, unit);
      grid.append(tile);
      this._values.set(key, value);
    }
    this.banner = banner;
    const canvas = /** @type {HTMLCanvasElement} */ (root.querySelector('[data-testid="ecg-strip"]'));
    this.ecg = new EcgStrip(canvas, "ecg_ii", ecgOptions);
  }

  /**
   * Follow a connection's vitals events. Returns a function that unsubscribes.
   * @param {RoomConnection} connection
   * @returns {() => void}
   */
  follow(connection) {
    const offs = [
      connection.on("vitals", (/** @type {any} */ batch) => {
        for (const n of (batch && batch.numerics) || []) this.numeric(n);
        for (const w of (batch && batch.waveforms) || []) this.ecg.add(w);
        this.render();
      }),
      connection.on("alarm_raised", (/** @type {Alarm} */ a) => this.alarm(a, true)),
      connection.on("alarm_cleared", (/** @type {Alarm} */ a) => this.alarm(a, false)),
    ];
    return () => offs.forEach((off) => off());
  }

  /** @param {{numerics?: Numeric[], alarms?: Alarm[]} | undefined} vitals  the snapshot's */
  reset(vitals) {
    this.root.hidden = false;
    this.latest.clear();
    this.alarms.clear();
    for (const n of (vitals && vitals.numerics) || []) this.numeric(n);
    for (const a of (vitals && vitals.alarms) || []) this.alarms.set(a.id, a);
    this.render();
    this.renderAlarms();
  }

  /**
   * Show exactly these numerics and alarms (replay: the state at one instant).
   * @param {Numeric[]} numerics
   * @param {Alarm[]} alarms
   */
  show(numerics, alarms) {
    this.latest.clear();
    for (const n of numerics) this.numeric(n);
    const ids = alarms.map((a) => a.id).join("\n");
    if (ids !== [...this.alarms.keys()].join("\n")) {
      this.alarms = new Map(alarms.map((a) => [a.id, a]));
      this.renderAlarms(); // renders the numerics too
    } else {
      this.render();
    }
  }

  /** @param {Numeric} n */
  numeric(n) {
    if (!n || typeof n.value !== "number") return;
    const prev = this.latest.get(n.kind);
    if (prev && (prev.time_ms || 0) > (n.time_ms || 0)) return; // keep the newest reading
    this.latest.set(n.kind, n);
  }

  /**
   * @param {Alarm} a
   * @param {boolean} raised
   */
  alarm(a, raised) {
    if (!a || !a.id) return;
    if (raised) this.alarms.set(a.id, a);
    else this.alarms.delete(a.id);
    this.renderAlarms();
  }

  render() {
    const value = (/** @type {string} */ kind) => {
      const n = this.latest.get(kind);
      return n ? fmt(n.value) : null;
    };
    const hr = value("hr") ?? value("pulse");
    this._set("hr", hr);
    for (const kind of ["spo2", "rr", "temp", "etco2"]) this._set(kind, value(kind));
    const sys = value("nibp_sys");
    const dia = value("nibp_dia");
    const mean = value("nibp_mean");
    this._set("nibp", sys || dia ? `${sys ?? "--"}/${dia ?? "--"}${mean ? ` (${mean})` : ""}` : null);
    for (const [key, el] of this._values) {
      const kinds = key === "nibp" ? ["nibp_sys", "nibp_dia", "nibp_mean"] : key === "hr" ? ["hr", "pulse"] : [key];
      const alarmed = [...this.alarms.values()].some((a) => kinds.includes(a.kind));
      /** @type {HTMLElement} */ (el.parentElement).classList.toggle("alarmed", alarmed);
    }
  }

  /**
   * @param {string} key
   * @param {string | null} text
   */
  _set(key, text) {
    const el = this._values.get(key);
    if (el) el.textContent = text ?? "--";
  }

  renderAlarms() {
    const active = [...this.alarms.values()];
    this.banner.replaceChildren(
      ...active.map((a) => {
        const line = document.createElement("p");
        line.dataset.testid = "alarm";
        line.dataset.kind = a.kind;
        const label = a.label || a.kind.toUpperCase();
        const unit = a.unit ? ` ${a.unit}` : "";
        line.textContent = `ALARM: ${label} ${a.condition === "low" ? "LOW" : "HIGH"} ${fmt(a.value)}${unit} (limit ${fmt(a.limit)})`;
        return line;
      }),
    );
    this.banner.hidden = active.length === 0;
    this.render();
  }

  destroy() {
    this.ecg.stop();
  }
}
