// The live room page (/room/{room}): join with the token from the link, show who is here.
// The expert, OR and trainee consoles grow from this page; the protocol is in protocol.js.

import { part } from "./dom.js";
import { connect, tokenFromLocation, tokenFromText } from "./protocol.js";
import { renderPresence } from "./presence-view.js";
import { RoomMedia } from "./room-media.js";
import { ExpertConsole } from "./console-expert.js";
import { OrConsole } from "./console-or.js";
import { RecordingPanel } from "./recording-panel.js";

/** @typedef {import("./protocol.js").RoomConnection} RoomConnection */
/** @typedef {import("./protocol.js").ProtocolError} ProtocolError */

const root = /** @type {HTMLElement} */ (document.getElementById("room"));
const room = root.dataset.room || "";
const storageKey = `orbridge.token.${room}`;

/** @param {string} testid */
const byTestId = (testid) => part(root, testid);

const ui = {
  status: byTestId("status"),
  banner: byTestId("banner"),
  bannerText: byTestId("banner-text"),
  error: byTestId("error"),
  errorMessage: byTestId("error-message"),
  errorCode: byTestId("error-code"),
  form: /** @type {HTMLFormElement} */ (byTestId("token-form")),
  input: /** @type {HTMLTextAreaElement} */ (byTestId("token-input")),
  self: byTestId("self"),
  selfName: byTestId("self-name"),
  selfRole: byTestId("self-role"),
  presence: byTestId("presence-section"),
  count: byTestId("presence-count"),
  rows: byTestId("presence-rows"),
};

const media = new RoomMedia(root);
/** @type {ExpertConsole | OrConsole | null} the console for this participant's role */
let roleConsole = null;
/** @type {RecordingPanel} */
let recordingPanel;

/**
 * The console for a role: the OR's (surgeon), the expert's (expert, moderator), or the
 * trainee's watch-only view; none for a device.
 * @param {string} role
 * @param {RoomConnection} connection
 * @returns {ExpertConsole | OrConsole | null}
 */
function consoleFor(role, connection) {
  if (role === "surgeon") return new OrConsole(root, media, connection);
  if (role === "expert" || role === "moderator") return new ExpertConsole(root, media, connection);
  if (role === "trainee") return new ExpertConsole(root, media, connection, { tools: false });
  return null;
}

/** Friendlier words for the refusals people will meet. */
const ERROR_TEXT = {
  token_expired: "Your join link has expired. Ask for a new one.",
  token_invalid: "This join link is not valid for this server. Check that you copied all of it.",
  token_missing: "No join token was given.",
  token_wrong_room: "This join link is for another room.",
  token_revoked: "You were removed from this consultation; this join link no longer works.",
  banned: "You were removed from this consultation and may not rejoin it yet.",
  duplicate_identity:
    "You are already in this room from another tab or device. Close it, or wait a few seconds if it stopped responding, then reload.",
  connect_failed: "The server cannot be reached. Check the network and reload the page.",
  timeout: "The server did not answer in time. Reload the page to try again.",
};

/** @param {string} state */
function setState(state) {
  root.dataset.state = state;
}

/** @param {string} text */
function setStatus(text) {
  ui.status.textContent = text;
}

/**
 * @param {string} code
 * @param {string} message
 */
function showError(code, message) {
  ui.errorMessage.textContent = ERROR_TEXT[/** @type {keyof ERROR_TEXT} */ (code)] || message;
  ui.errorMessage.title = message;
  ui.errorCode.textContent = code;
  ui.error.dataset.code = code;
  ui.error.hidden = false;
  setState("error");
}

function hideError() {
  ui.error.hidden = true;
  delete ui.error.dataset.code;
}

/**
 * @param {string} reason
 * @param {string} text
 */
function showBanner(reason, text) {
  ui.bannerText.textContent = text;
  ui.banner.dataset.reason = reason;
  ui.banner.hidden = false;
}

function hideBanner() {
  ui.banner.hidden = true;
  delete ui.banner.dataset.reason;
}

function showTokenForm() {
  ui.form.hidden = false;
  if (root.dataset.state !== "error") setState("needs-token");
  setStatus("Not connected.");
  ui.input.focus();
}

/** @param {RoomConnection} connection */
function render(connection) {
  const me = connection.self;
  const list = connection.participants.list();
  if (me) {
    const current = connection.participants.get(me.identity) || me;
    ui.selfName.textContent = current.name;
    ui.selfRole.textContent = current.role;
    ui.self.dataset.identity = current.identity;
    ui.self.hidden = false;
  }
  ui.count.textContent = String(list.length);
  renderPresence(ui.rows, list, me ? me.identity : null);
  ui.presence.hidden = false;
}

/** @param {RoomConnection} connection */
function follow(connection) {
  connection.participants.onChange(() => render(connection));
  recordingPanel = new RecordingPanel(byTestId("recording-section"), connection);
  connection.on("removed", (/** @type {{reason?: string, by?: string, message?: string}} */ notice) => {
    const reason = (notice && notice.reason) || "removed";
    if (reason === "duplicate_identity") {
      showBanner(reason, "You joined this room from another tab or device, so this page was disconnected.");
    } else if (reason === "consultation_ended") {
      const by = notice && notice.by ? ` by ${notice.by}` : "";
      showBanner(reason, `The consultation was ended${by}. Open your join link again to start a new one.`);
    } else {
      const by = notice && notice.by ? ` by ${notice.by}` : "";
      const why = notice && notice.message ? `: ${notice.message}` : ".";
      showBanner(reason, `You were removed from this room${by}${why}`);
    }
  });
  connection.on("server_shutdown", () => {
    showBanner("server_shutdown", "The server is restarting. This page will reconnect by itself.");
  });
  connection.onState((state, detail) => {
    if (state === "joined") {
      setState("joined");
      setStatus("Connected.");
      hideError();
      if (ui.banner.dataset.reason === "server_shutdown") hideBanner();
      render(connection);
      const snapshot = connection.snapshot;
      if (!roleConsole && snapshot && snapshot.self) {
        roleConsole = consoleFor(snapshot.self.role, connection);
        if (roleConsole) root.dataset.console = roleConsole.kind;
        Object.assign(/** @type {any} */ (window).orbridge, {
          console: roleConsole,
          annotations: roleConsole ? roleConsole.store : null,
          annotationLatencies: roleConsole ? roleConsole.store.latencies : [],
        });
      }
      if (roleConsole && snapshot) roleConsole.joined(snapshot);
      if (snapshot) recordingPanel.joined(snapshot);
      media.attach(connection).catch((err) => console.error("orbridge: media", err));
    } else if (state === "reconnecting") {
      setState("reconnecting");
      setStatus("Connection lost. Reconnecting…");
    } else if (state === "closed") {
      media.detach();
      setState("closed");
      setStatus("Disconnected.");
      if (detail.error) {
        showError(detail.error.code, detail.error.message);
        if (detail.error.code.startsWith("token_")) {
          forgetToken();
          showTokenForm();
        }
      }
    } else if (state === "connected") {
      setStatus("Connected. Joining…");
    }
  });
}

function forgetToken() {
  try {
    sessionStorage.removeItem(storageKey);
  } catch {
    /* storage may be disabled */
  }
}

/** @param {string} token */
function rememberToken(token) {
  // Kept for this tab only, so a reload in the operating room does not need the link again.
  try {
    sessionStorage.setItem(storageKey, token);
  } catch {
    /* storage may be disabled */
  }
}

/** @returns {string | null} */
function storedToken() {
  try {
    return sessionStorage.getItem(storageKey);
  } catch {
    return null;
  }
}

/** @param {string} token */
async function start(token) {
  ui.form.hidden = true;
  hideError();
  hideBanner();
  setState("connecting");
  setStatus("Connecting…");
  /** @type {RoomConnection} */
  let connection;
  try {
    connection = await connect(window.location.origin, { token, room });
    connection.onToken(rememberToken); // a reload reconnects with the session's own token
  } catch (err) {
    const e = /** @type {ProtocolError} */ (err);
    showError(e.code || "connect_failed", e.message);
    if (String(e.code).startsWith("token_")) {
      forgetToken();
      showTokenForm();
    } else {
      setStatus("Not connected.");
    }
    return;
  }
  rememberToken(token);
  // For diagnostics from the console (and the browser tests): the live objects of this page.
  Object.assign(window, { orbridge: { connection, media } });
  follow(connection);
  try {
    await connection.join({ quality: "unknown" });
  } catch (err) {
    const e = /** @type {ProtocolError} */ (err);
    showError(e.code || "internal_error", e.message);
    connection.close();
  }
}

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = tokenFromText(ui.input.value);
  if (!token) {
    ui.input.focus();
    return;
  }
  ui.input.value = "";
  start(token);
});

const initial = tokenFromLocation() || storedToken();
if (initial) start(initial);
else showTokenForm();
