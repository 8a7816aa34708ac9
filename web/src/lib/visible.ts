/**
 * Text from the network made safe to read: control characters and the
 * invisible or reordering Unicode formatting characters (zero-width
 * spaces, bidi embeddings, overrides and isolates, marks) are shown as
 * `⟨U+XXXX⟩`, so `alice\u200b@kez.lat` or `invoice\u202efdp.exe` cannot
 * pass for something they are not.
 */
// eslint-disable-next-line no-control-regex
const HIDDEN = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

export function visible(text: string): string {
  return text.replace(HIDDEN, (c) => `⟨U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}⟩`);
}

/** A label quoted in a sentence: made visible, cut to `max` characters. */
export function quote(value: unknown, max = 80): string {
  const text = visible(String(value));
  return `"${text.length > max ? text.slice(0, max - 1) + '…' : text}"`;
}
