/**
 * Peer-to-peer file offers (`file_share`) are fetched by the `kez-chat`
 * command-line client, not in the browser: the app shows the command to
 * copy, ready to paste into a terminal.
 */

/** `text` as one POSIX shell word (single-quoted unless plainly safe). */
export function shellWord(text: string): string {
  if (/^[A-Za-z0-9._+@%=:,-]+$/.test(text) && !text.startsWith('-')) return text;
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** A file name to save to: no directories, no leading dot or dash. */
export function outName(name: string): string {
  const base = name.split(/[/\\]/).pop() ?? '';
  const trimmed = base.replace(/^[.\-\s]+/, '').trim();
  return trimmed === '' ? 'shared-file' : trimmed;
}

/** The command that fetches an offered file with the CLI. */
export function fetchCommand(blake3: string, name: string): string {
  return `kez-chat fetch ${blake3} --out ${shellWord(outName(name))}`;
}
