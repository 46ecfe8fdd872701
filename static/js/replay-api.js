// The recordings API for the library and replay pages: the token (from the URL fragment, kept
// for this tab), authorized JSON requests, and the words people see when access fails.

import { tokenFromLocation, tokenFromText } from "./protocol.js";

export { tokenFromText };

const STORAGE_KEY = "orbridge.library.token";

/** Friendlier words for the refusals people will meet. */
export const ERROR_TEXT = {
  token_missing: "This page needs your library link (or a join link with access to recordings).",
  token_expired: "Your link has expired. Ask for a new one.",
  token_invalid: "This link is not valid for this server. Check that you copied all of it.",
  unauthorized: "This page needs your library link.",
  forbidden: "Your link does not give access to this recording.",
  not_found: "There is no such recording. It may have been deleted.",
  invalid_recording: "This is not a recording's address.",
  invalid_query: "The search could not be understood.",
  network: "The server cannot be reached. Check the network and reload the page.",
};

export class ApiError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {number} status
   */
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }

  /** The sentence for people: ours for known codes, else the server's. */
  get text() {
    return ERROR_TEXT[/** @type {keyof ERROR_TEXT} */ (this.code)] || this.message;
  }
}

/** @returns {string | null} the token of the URL fragment (then taken out), else this tab's */
export function initialToken() {
  const fromUrl = tokenFromLocation();
  if (fromUrl) {
    remember(fromUrl);
    return fromUrl;
  }
  try {
    return sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

/** @param {string} token  kept for this tab only: a reload needs no new link */
export function remember(token) {
  try {
    sessionStorage.setItem(STORAGE_KEY, token);
  } catch {
    /* storage may be disabled */
  }
}

export function forget() {
  try {
    sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    /* storage may be disabled */
  }
}

/**
 * A JSON request with the bearer token; ApiError for any refusal.
 * @param {string} token
 * @param {string} path
 * @param {RequestInit} [init]
 * @returns {Promise<any>}
 */
export async function api(token, path, init = {}) {
  let response;
  try {
    response = await fetch(path, {
      ...init,
      headers: { ...(init.headers || {}), Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError("network", String(err), 0);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON: described below */
  }
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(error.code || `http_${response.status}`, error.message || response.statusText, response.status);
  }
  return body;
}

/**
 * The replay page of a recording, the token along in the fragment (never sent to a server).
 * @param {string} id
 * @param {string} token
 */
export function replayHref(id, token) {
  return `/recordings/${encodeURIComponent(id)}#token=${encodeURIComponent(token)}`;
}

/**
 * Local date and time of a timeline instant.
 * @param {number} ms
 */
export function dateTimeText(ms) {
  return new Date(ms).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
}

/** Consent states in words. */
export const CONSENT_TEXT = {
  written: "Written consent",
  verbal: "Verbal consent",
  pending: "Consent pending",
  withdrawn: "Consent withdrawn",
  not_required: "Consent not required",
};
