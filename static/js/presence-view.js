// Renders the participant list as table rows. Text only (textContent): names come from
// tokens and must never be read as HTML.

/** @typedef {import("./protocol.js").Participant} Participant */

/** @type {Record<string, string>} */
export const ROLE_LABELS = {
  surgeon: "surgeon",
  expert: "expert",
  trainee: "trainee",
  device: "device",
  moderator: "moderator",
};

/** @type {Record<string, string>} */
export const QUALITY_LABELS = {
  good: "good",
  fair: "fair",
  poor: "poor",
  unknown: "unknown",
};

/**
 * @param {string} tag
 * @param {string} text
 * @param {Record<string, string>} [attrs]
 * @returns {HTMLElement}
 */
function cell(tag, text, attrs = {}) {
  const el = document.createElement(tag);
  el.textContent = text;
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  return el;
}

/**
 * One table row for a participant.
 * @param {Participant} p
 * @param {boolean} isSelf
 * @returns {HTMLTableRowElement}
 */
export function participantRow(p, isSelf) {
  const row = document.createElement("tr");
  row.dataset.testid = "participant";
  row.dataset.identity = p.identity;
  row.dataset.role = p.role;
  if (isSelf) row.classList.add("is-self");
  const quality = QUALITY_LABELS[p.quality] ? p.quality : "unknown";
  row.append(
    cell("td", p.name, { "data-testid": "participant-name" }),
    cell("td", ROLE_LABELS[p.role] || p.role, { "data-testid": "participant-role" }),
    cell("td", p.node, { "data-testid": "participant-node", class: "node" }),
  );
  const q = cell("td", "");
  q.append(
    cell("span", QUALITY_LABELS[quality], {
      "data-testid": "participant-quality",
      class: `quality quality-${quality}`,
    }),
  );
  row.append(q);
  return row;
}

/**
 * Replace the rows of `tbody` with `participants`.
 * @param {HTMLElement} tbody
 * @param {Participant[]} participants
 * @param {string | null} selfIdentity
 */
export function renderPresence(tbody, participants, selfIdentity) {
  tbody.replaceChildren(...participants.map((p) => participantRow(p, p.identity === selfIdentity)));
}
