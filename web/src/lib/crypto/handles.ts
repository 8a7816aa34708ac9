/**
 * Handles: `local@server`, stored in the qualified lowercase form.
 */
export const LOCAL_RE = /^[a-z0-9][a-z0-9_-]{2,31}$/;
const SERVER_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:[0-9]{1,5})?$/;

export interface Handle {
  local: string;
  server: string;
  fqhn: string;
}

/** Parse a handle as a person typed it (`alice`, `Alice@kez.lat`); throws with a readable reason. */
export function parseHandle(text: string, defaultServer: string): Handle {
  let t = text.trim();
  if (t.startsWith('@')) t = t.slice(1);
  // ASCII only: toLowerCase maps some non-ASCII letters to ASCII ones
  if (!/^[\x20-\x7e]*$/.test(t)) throw new Error('a handle uses only a-z, 0-9, _ and -');
  t = t.toLowerCase();
  const at = t.indexOf('@');
  const local = at < 0 ? t : t.slice(0, at);
  const server = at < 0 ? defaultServer.toLowerCase() : t.slice(at + 1);
  if (!LOCAL_RE.test(local)) {
    throw new Error('a handle is 3–32 characters of a-z, 0-9, _ and -, starting with a letter or digit');
  }
  if (!SERVER_RE.test(server)) throw new Error('the part after @ is not a server name');
  return { local, server, fqhn: `${local}@${server}` };
}

export function localOf(fqhn: string): string {
  const at = fqhn.indexOf('@');
  return at < 0 ? fqhn : fqhn.slice(0, at);
}
