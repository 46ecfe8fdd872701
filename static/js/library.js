// The recordings library (/recordings#token=...): search the recordings this token may see,
// with thumbnails, and open one in the replay page.

import { part } from "./dom.js";
import { CONSENT_TEXT, api, dateTimeText, forget, initialToken, remember, replayHref, tokenFromText } from "./replay-api.js";
import { clockText } from "./replay-time.js";

/** @typedef {import("./replay-api.js").ApiError} ApiError */

const PAGE_SIZE = 24;
const SEARCH_DELAY_MS = 250;

const root = /** @type {HTMLElement} */ (document.getElementById("library"));

/** @param {string} testid */
const byTestId = (testid) => part(root, testid);

const ui = {
  status: byTestId("status"),
  error: byTestId("error"),
  errorMessage: byTestId("error-message"),
  errorCode: byTestId("error-code"),
  tokenForm: /** @type {HTMLFormElement} */ (byTestId("token-form")),
  tokenInput: /** @type {HTMLTextAreaElement} */ (byTestId("token-input")),
  body: byTestId("library-body"),
  viewer: byTestId("viewer"),
  search: /** @type {HTMLFormElement} */ (byTestId("search")),
  count: byTestId("result-count"),
  results: byTestId("results"),
  pager: byTestId("pager"),
  prev: /** @type {HTMLButtonElement} */ (byTestId("page-prev")),
  next: /** @type {HTMLButtonElement} */ (byTestId("page-next")),
  pageText: byTestId("page-text"),
};

/** @type {string | null} */
let token = null;
let offset = 0;
let generation = 0; // a newer search wins over a slower older one
/** @type {ReturnType<typeof setTimeout> | undefined} */
let pending;

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
  setState("error");
}

function showTokenForm() {
  ui.tokenForm.hidden = false;
  ui.body.hidden = true;
  ui.status.textContent = "";
  ui.tokenInput.focus();
  if (root.dataset.state !== "error") setState("needs-token");
}

/** @returns {URLSearchParams} the search form as API parameters */
function query() {
  const params = new URLSearchParams();
  const data = new FormData(ui.search);
  for (const [key, value] of data) {
    const text = String(value).trim();
    if (text) params.set(key, text);
  }
  // dates are the viewer's own days
  if (params.has("from") || params.has("to")) params.set("tz", String(-new Date().getTimezoneOffset()));
  params.set("limit", String(PAGE_SIZE));
  params.set("offset", String(offset));
  return params;
}

/**
 * One result card.
 * @param {any} r  a recording summary
 */
function card(r) {
  const item = document.createElement("li");
  item.className = "recording-card";
  item.dataset.testid = "recording-card";
  item.dataset.id = r.id;
  item.dataset.state = r.state;
  const link = document.createElement("a");
  link.href = replayHref(r.id, /** @type {string} */ (token));
  link.dataset.testid = "recording-link";
  const img = document.createElement("img");
  img.className = "thumbnail";
  img.dataset.testid = "thumbnail";
  img.alt = "";
  img.width = 320;
  img.height = 180;
  img.loading = "lazy";
  img.decoding = "async";
  img.src = r.thumbnail;
  const title = document.createElement("h3");
  title.dataset.testid = "card-title";
  title.textContent = r.procedure || "Untitled recording";
  link.append(img, title);
  const meta = document.createElement("p");
  meta.className = "card-meta";
  const hospital = document.createElement("span");
  hospital.dataset.testid = "card-hospital";
  hospital.textContent = r.hospital || "Hospital not given";
  const when = document.createElement("span");
  when.dataset.testid = "card-date";
  when.textContent = dateTimeText(r.started_ms);
  const length = document.createElement("span");
  length.dataset.testid = "card-duration";
  length.textContent = clockText(r.duration * 1000);
  const room = document.createElement("span");
  room.textContent = `room ${r.room}`;
  meta.append(hospital, when, length, room);
  const badges = document.createElement("p");
  badges.className = "badges";
  for (const tag of r.tags) {
    const chip = document.createElement("span");
    chip.className = "tag";
    chip.dataset.testid = "card-tag";
    chip.textContent = tag;
    badges.append(chip);
  }
  if (r.state !== "complete") {
    const state = document.createElement("span");
    state.className = `badge state-${r.state}`;
    state.dataset.testid = "card-state";
    state.textContent = r.state === "recording" ? "Recording now" : r.state === "interrupted" ? "Interrupted" : r.state;
    badges.append(state);
  }
  if (r.can_edit) {
    // only the room's moderators (and API keys) manage consent: they see where it stands
    const consent = document.createElement("span");
    consent.className = `badge consent consent-${r.consent}`;
    consent.dataset.testid = "card-consent";
    consent.dataset.consent = r.consent;
    consent.textContent = CONSENT_TEXT[/** @type {keyof CONSENT_TEXT} */ (r.consent)] || r.consent;
    badges.append(consent);
  }
  item.append(link, meta, badges);
  return item;
}

async function search() {
  if (!token) return;
  const mine = ++generation;
  root.dataset.searching = "true";
  let body;
  try {
    body = await api(token, `/api/recordings?${query()}`);
  } catch (err) {
    if (mine !== generation) return;
    const e = /** @type {ApiError} */ (err);
    delete root.dataset.searching;
    if (e.code === "invalid_query") {
      ui.count.textContent = `${e.text} ${e.message}`;
      return;
    }
    const text = e.code === "forbidden" ? "This link does not open the recordings library. Ask for a library link." : e.text;
    showError(e.code, text, e.message);
    if (e.status === 401 || e.status === 403) {
      forget();
      token = null;
      showTokenForm();
    }
    return;
  }
  if (mine !== generation) return;
  delete root.dataset.searching;
  ui.error.hidden = true;
  ui.tokenForm.hidden = true;
  ui.body.hidden = false;
  ui.status.textContent = "";
  const viewer = body.viewer;
  ui.viewer.textContent = viewer.api_key
    ? "Signed in with an API key: every recording."
    : `${viewer.name} (${viewer.role}): recordings of ${viewer.rooms.join(", ")}.`;
  ui.results.replaceChildren(...body.recordings.map(card));
  const total = body.total;
  ui.count.textContent =
    total === 0 ? "No recordings match." : total === 1 ? "1 recording." : `${total} recordings.`;
  ui.pager.hidden = total <= PAGE_SIZE;
  ui.prev.disabled = offset === 0;
  ui.next.disabled = offset + PAGE_SIZE >= total;
  ui.pageText.textContent = `${offset + 1}-${Math.min(total, offset + PAGE_SIZE)} of ${total}`;
  setState("ready");
}

function searchSoon() {
  clearTimeout(pending);
  pending = setTimeout(() => {
    offset = 0;
    search();
  }, SEARCH_DELAY_MS);
}

ui.search.addEventListener("submit", (event) => {
  event.preventDefault();
  clearTimeout(pending);
  offset = 0;
  search();
});
ui.search.addEventListener("input", searchSoon);
ui.search.addEventListener("reset", () => setTimeout(searchSoon, 0)); // after the fields clear
ui.prev.addEventListener("click", () => {
  offset = Math.max(0, offset - PAGE_SIZE);
  search();
});
ui.next.addEventListener("click", () => {
  offset += PAGE_SIZE;
  search();
});
ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const given = tokenFromText(ui.tokenInput.value);
  if (!given) return;
  ui.tokenInput.value = "";
  ui.error.hidden = true;
  token = given;
  remember(given);
  setState("loading");
  search();
});

token = initialToken();
if (token) search();
else {
  showError("token_missing", "This page needs your library link (or a join link with access to recordings).");
  showTokenForm();
}
