// The replay page (/recordings/{id}#token=...): the laparoscope video of a recording with the
// experts' drawings redrawn on the very frames they were drawn on, the vitals numerics and ECG
// strip at the same instant, chapters, seeking and 0.5x-2x speed. Time model: replay-time.js.

import { part } from "./dom.js";
import { CONSENT_TEXT, api, dateTimeText, forget, initialToken, remember, tokenFromText } from "./replay-api.js";
import { ReplayEvents, parseEvents } from "./replay-events.js";
import { ReplayOverlay } from "./replay-overlay.js";
import { ReplayPlayer } from "./replay-player.js";
import { clockText } from "./replay-time.js";
import { VitalsPanel } from "./vitals-panel.js";

/** @typedef {import("./replay-api.js").ApiError} ApiError */
/** @typedef {import("./replay-time.js").Segment} Segment */

const ECG_WINDOW_MS = 6500; // a little more than the strip shows
const STEP_MS = 5000;
const FRAME_MS = 1000 / 30;

const root = /** @type {HTMLElement} */ (document.getElementById("replay"));
const recordingId = root.dataset.recordingId || "";

/** @param {string} testid */
const byTestId = (testid) => part(root, testid);

const ui = {
  status: byTestId("status"),
  error: byTestId("error"),
  errorMessage: byTestId("error-message"),
  errorCode: byTestId("error-code"),
  tokenForm: /** @type {HTMLFormElement} */ (byTestId("token-form")),
  tokenInput: /** @type {HTMLTextAreaElement} */ (byTestId("token-input")),
  console: byTestId("replay-console"),
  title: byTestId("replay-title"),
  meta: byTestId("replay-meta"),
  video: /** @type {HTMLVideoElement} */ (byTestId("replay-video")),
  overlay: /** @type {HTMLCanvasElement} */ (byTestId("replay-overlay")),
  gap: byTestId("gap"),
  play: /** @type {HTMLButtonElement} */ (byTestId("play")),
  time: byTestId("time"),
  duration: byTestId("duration"),
  seek: /** @type {HTMLInputElement} */ (byTestId("seek")),
  marks: byTestId("chapter-marks"),
  speed: /** @type {HTMLSelectElement} */ (byTestId("speed")),
  audioHint: byTestId("audio-hint"),
  chapters: byTestId("chapters"),
  noChapters: byTestId("no-chapters"),
  participants: byTestId("participants"),
  vitals: byTestId("vitals"),
  alarms: byTestId("alarm-banner"),
  audioTracks: byTestId("audio-tracks"),
};

const GAP_TEXT = {
  none: "No video was recorded in this session.",
  before: "No video yet: the laparoscope was not being sent.",
  between: "No video: publisher reconnecting",
  after: "The video has ended.",
};

/** @param {string} state */
function setState(state) {
  root.dataset.state = state;
}

/**
 * @param {string} code
 * @param {string} text
 * @param {string} [detail]
 */
function showError(code, text, detail = "") {
  ui.errorMessage.textContent = text;
  ui.errorMessage.title = detail;
  ui.errorCode.textContent = code;
  ui.error.dataset.code = code;
  ui.error.hidden = false;
  ui.status.textContent = "";
  setState("error");
}

function showTokenForm() {
  ui.tokenForm.hidden = false;
  ui.tokenInput.focus();
}

/**
 * Fetch the recording and its event log.
 * @param {string} token
 */
async function load(token) {
  const manifest = await api(token, `/api/recordings/${encodeURIComponent(recordingId)}`);
  let text = "";
  const eventsUrl = manifest.links[manifest.events];
  try {
    const response = await fetch(eventsUrl, { cache: "no-store" });
    if (response.ok) text = await response.text();
    else console.warn("replay: no event log", response.status);
  } catch (err) {
    console.warn("replay: no event log", err);
  }
  return { manifest, events: parseEvents(text) };
}

/**
 * The page, once the recording is here.
 * @param {any} manifest  the API's manifest, with `links`
 * @param {any[]} log
 */
function start(manifest, log) {
  const events = new ReplayEvents(manifest, log);
  const overlay = new ReplayOverlay(ui.video, ui.overlay);
  /** @type {ReplayPlayer} */
  let player;
  const vitals = new VitalsPanel(ui.vitals, ui.alarms, { clock: () => (player ? player.wall() : manifest.started_ms) });
  const chapters = events.chapters();

  // header --------------------------------------------------------------------------------
  const title = manifest.procedure || "Untitled recording";
  ui.title.textContent = title;
  document.title = `${title} - replay - orbridge`;
  const parts = [manifest.hospital, dateTimeText(manifest.started_ms), `room ${manifest.room}`];
  /**
   * @param {string} text
   * @param {string} [className]
   */
  const span = (text, className = "") => {
    const el = document.createElement("span");
    el.textContent = text;
    if (className) el.className = className;
    return el;
  };
  ui.meta.replaceChildren(
    ...parts.filter(Boolean).map((p) => span(p)),
    ...manifest.tags.map((/** @type {string} */ t) => span(t, "tag")),
  );
  if (manifest.can_edit) {
    const consent = document.createElement("span");
    consent.className = `badge consent consent-${manifest.consent.state}`;
    consent.dataset.testid = "replay-consent";
    consent.textContent = CONSENT_TEXT[/** @type {keyof CONSENT_TEXT} */ (manifest.consent.state)] || manifest.consent.state;
    ui.meta.append(consent);
  }
  if (manifest.state === "recording") {
    const live = document.createElement("span");
    live.className = "badge state-recording";
    live.textContent = "Still recording: reload for more";
    ui.meta.append(live);
  }

  // participants ----------------------------------------------------------------------------
  /** @type {{el: HTMLElement, joined: number, left: number}[]} */
  const people = manifest.participants.map((/** @type {any} */ p) => {
    const li = document.createElement("li");
    li.dataset.testid = "participant";
    li.dataset.identity = p.identity;
    const name = document.createElement("strong");
    name.textContent = p.name;
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = ` ${p.role}`;
    const when = document.createElement("span");
    when.className = "when";
    const joined = clockText(Math.max(0, p.joined_ms - manifest.started_ms));
    when.textContent = p.left_ms ? ` ${joined}-${clockText(p.left_ms - manifest.started_ms)}` : ` from ${joined}`;
    li.append(name, role, when);
    ui.participants.append(li);
    return { el: li, joined: p.joined_ms, left: p.left_ms ?? Infinity };
  });

  // player ----------------------------------------------------------------------------------
  let lastNumerics = "";
  /** @type {any} */
  let ecgFirst = null;
  /** @type {any} */
  let ecgLast = null;
  let chapterIndex = -2;
  let dragging = false;

  player = new ReplayPlayer({
    manifest,
    links: manifest.links,
    video: ui.video,
    audioHost: ui.audioTracks,
    onFrame(segment, media) {
      if (segment) overlay.paint(events.visibleAt(segment, media));
      else overlay.clear();
    },
    onTick(wall) {
      const pos = wall - player.start;
      ui.time.textContent = clockText(pos);
      if (!dragging) ui.seek.value = String(pos);
      // vitals at this instant (re-rendered only when they change)
      const numerics = events.numericsAt(wall);
      const alarms = events.alarmsAt(wall);
      const key = JSON.stringify([numerics.map((n) => [n.kind, n.value]), alarms.map((a) => a.id)]);
      if (key !== lastNumerics) {
        lastNumerics = key;
        vitals.show(numerics, alarms);
      }
      const batches = events.ecgBetween(wall - ECG_WINDOW_MS, wall);
      const first = batches[0] || null;
      const last = batches[batches.length - 1] || null;
      if (first !== ecgFirst || last !== ecgLast) {
        ecgFirst = first;
        ecgLast = last;
        vitals.ecg.clear();
        for (const b of batches) vitals.ecg.add(b);
      }
      for (const p of people) p.el.classList.toggle("present", p.joined <= wall && wall < p.left);
      let current = -1;
      for (let i = 0; i < chapters.length && chapters[i].t <= wall; i++) current = i;
      if (current !== chapterIndex) {
        chapterIndex = current;
        ui.chapters.querySelectorAll("li").forEach((li, i) => {
          li.classList.toggle("current", i === current);
          if (i === current) li.setAttribute("aria-current", "true");
          else li.removeAttribute("aria-current");
        });
      }
    },
    onState() {
      ui.play.textContent = player.playing ? "Pause" : "Play";
      ui.play.setAttribute("aria-pressed", String(player.playing));
      root.dataset.playing = String(player.playing);
      ui.speed.value = String(player.rate);
      const gap = player.gap();
      ui.gap.hidden = gap === null;
      ui.gap.dataset.gap = gap || "";
      ui.gap.textContent = gap ? GAP_TEXT[gap] : "";
      ui.video.classList.toggle("is-gap", gap !== null);
      ui.audioHint.hidden = !player.audioBlocked;
    },
  });

  // controls ----------------------------------------------------------------------------------
  const duration = player.duration;
  ui.duration.textContent = clockText(duration);
  ui.seek.max = String(duration);
  ui.seek.setAttribute("aria-valuetext", "0:00");
  ui.chapters.replaceChildren(
    ...chapters.map((c, i) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "chapter";
      button.dataset.testid = "chapter";
      button.dataset.t = String(c.t - player.start);
      button.textContent = `${clockText(c.t - player.start)} ${c.title}`;
      button.addEventListener("click", () => seekTo(c.t - player.start));
      li.append(button);
      const mark = document.createElement("span");
      mark.className = "chapter-mark";
      mark.dataset.testid = "chapter-mark";
      mark.title = c.title;
      mark.style.left = `${duration ? ((c.t - player.start) / duration) * 100 : 0}%`;
      mark.dataset.index = String(i);
      ui.marks.append(mark);
      return li;
    }),
  );
  ui.noChapters.hidden = chapters.length > 0;

  // one seek at a time: while one runs, only the latest wanted position waits
  /** @type {number | null} */
  let wanted = null;
  /** @type {Promise<void> | null} */
  let seeking = null;
  /**
   * @param {number} ms
   * @returns {Promise<void>}
   */
  function seekTo(ms) {
    wanted = ms;
    if (!seeking) {
      seeking = (async () => {
        while (wanted !== null) {
          const target = wanted;
          wanted = null;
          await player.seek(target);
        }
        seeking = null;
      })();
    }
    return seeking;
  }

  ui.play.addEventListener("click", () => (player.playing ? player.pause() : player.play()));
  ui.speed.addEventListener("change", () => player.setRate(Number(ui.speed.value)));
  ui.seek.addEventListener("pointerdown", () => (dragging = true));
  ui.seek.addEventListener("pointerup", () => (dragging = false));
  ui.seek.addEventListener("input", () => {
    ui.seek.setAttribute("aria-valuetext", clockText(Number(ui.seek.value)));
    seekTo(Number(ui.seek.value));
  });
  ui.seek.addEventListener("change", () => {
    dragging = false;
    seekTo(Number(ui.seek.value));
  });
  document.addEventListener("keydown", (event) => {
    const target = /** @type {HTMLElement} */ (event.target);
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (target.closest("input, textarea, select, [contenteditable]") && target !== ui.seek) return;
    if (event.key === " " || event.code === "Space") {
      if (target.closest("button")) return; // the button's own click
      event.preventDefault();
      if (player.playing) player.pause();
      else player.play();
    } else if ((event.key === "ArrowLeft" || event.key === "ArrowRight") && target !== ui.seek) {
      event.preventDefault();
      seekTo(player.position() + (event.key === "ArrowLeft" ? -STEP_MS : STEP_MS));
    } else if ((event.key === "," || event.key === ".") && !player.playing) {
      seekTo(player.position() + (event.key === "," ? -FRAME_MS : FRAME_MS));
    }
  });

  // for diagnostics from the console, and the browser tests
  const hook = {
    ready: false,
    recordingId,
    startedMs: player.start,
    durationMs: duration,
    timelineMs: () => player.position(),
    /** @param {number} ms */
    seek: async (ms) => {
      await seekTo(ms);
      return player.position();
    },
    play: () => player.play(),
    pause: () => player.pause(),
    /** @param {number} rate */
    setRate: (rate) => player.setRate(rate),
    playing: () => player.playing,
    rate: () => player.rate,
    visibleAnnotationIds: () => overlay.ids(),
    numerics: () => Object.fromEntries(events.numericsAt(player.wall()).map((n) => [n.kind, n.value])),
    shownNumerics: () => ({ ...Object.fromEntries([...vitals.latest].map(([k, n]) => [k, n.value])) }),
    frame: () => (player.lastFrame ? { file: player.lastFrame.segment.file, mediaTime: player.lastFrame.media } : null),
    gap: () => player.gap(),
    chapters: () => chapters.map((c) => ({ ...c, at: c.t - player.start })),
    player,
    events,
  };
  Object.assign(window, { orbridgeReplay: hook });
  ui.console.hidden = false;
  ui.status.textContent = "";
  setState("ready");
  player.seek(player.openingPosition()).then(() => {
    hook.ready = true;
    root.dataset.ready = "true";
  });
}

/** @param {string} token */
async function open(token) {
  ui.tokenForm.hidden = true;
  ui.error.hidden = true;
  setState("loading");
  ui.status.textContent = "Loading the recording…";
  let loaded;
  try {
    loaded = await load(token);
  } catch (err) {
    const e = /** @type {ApiError} */ (err);
    showError(e.code, e.text, e.message);
    if (e.status === 401) {
      forget();
      showTokenForm();
    }
    return;
  }
  remember(token);
  start(loaded.manifest, loaded.events);
}

ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const given = tokenFromText(ui.tokenInput.value);
  if (!given) return;
  ui.tokenInput.value = "";
  open(given);
});

const initial = initialToken();
if (initial) open(initial);
else {
  showError("token_missing", "Replay needs your library link (or a join link with access to recordings).");
  showTokenForm();
}
