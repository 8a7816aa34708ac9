/** RFC 3339 UTC with whole seconds and a literal Z: `2026-05-25T03:00:00Z`. */
export function rfc3339(seconds: number): string {
  return new Date(Math.floor(seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function nowRfc3339(): string {
  return rfc3339(Date.now() / 1000);
}
