// Finding the pages' parts: every element a script needs carries a data-testid, so the
// scripts and the browser tests name the same things.

/**
 * The element of `root` with this data-testid (an Error if the page lacks it).
 * @param {ParentNode} root
 * @param {string} testid
 * @returns {HTMLElement}
 */
export function part(root, testid) {
  const el = root.querySelector(`[data-testid="${testid}"]`);
  if (!el) throw new Error(`missing element ${testid}`);
  return /** @type {HTMLElement} */ (el);
}
