/**
 * Web addresses in a message made clickable, safely: the text is cut into
 * plain pieces and link pieces, which the view renders as text nodes and
 * `<a>` elements (never as HTML). Only `http:` and `https:` addresses
 * become links; anything else (`javascript:`, `data:`) stays text.
 */

export type Piece = { text: string; href?: undefined } | { text: string; href: string };

const URLISH = /\bhttps?:\/\/[^\s<>"'`]+/gi;
/** punctuation that usually ends the sentence, not the address */
const TRAILING = /[.,;:!?'")\]}>]+$/;

function closeParens(candidate: string): string {
  // keep a ")" that closes a "(" inside the address (Wikipedia-style links)
  let text = candidate;
  for (;;) {
    const trail = TRAILING.exec(text);
    if (!trail) return text;
    const cut = trail[0];
    if (cut === ')' && (text.match(/\(/g)?.length ?? 0) >= (text.match(/\)/g)?.length ?? 0)) return text;
    text = text.slice(0, text.length - 1);
  }
}

/** The address as a link target, or null when it is not an http(s) URL. */
export function safeHref(text: string): string | null {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  if (!url.hostname) return null;
  return url.href;
}

export function linkify(text: string): Piece[] {
  const out: Piece[] = [];
  let last = 0;
  for (const match of text.matchAll(URLISH)) {
    const raw = closeParens(match[0]);
    const href = safeHref(raw);
    if (href === null) continue;
    const start = match.index;
    if (start > last) out.push({ text: text.slice(last, start) });
    out.push({ text: raw, href });
    last = start + raw.length;
  }
  if (last < text.length || out.length === 0) out.push({ text: text.slice(last) });
  return out;
}
