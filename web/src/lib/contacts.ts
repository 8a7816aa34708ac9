/**
 * The pin map: which key each handle has, and which handle each key has,
 * both ways. A handle is pinned to the first key seen for it (trust on
 * first use) and never moves silently: every message is checked against
 * both directions, so a server cannot relabel one person's messages as
 * another's, nor swap a pinned person's key, without a warning.
 */
import { keys, type Put } from './storage';

/** What the pins say about a verified key arriving under a handle. */
export type PinCheck =
  /** both are pinned, to each other */
  | { kind: 'pinned'; handle: string }
  /** neither is known: this pair would be pinned on first use */
  | { kind: 'new'; handle: string }
  /** the key is pinned to another handle: the label is a lie */
  | { kind: 'relabelled'; handle: string; claimed: string }
  /** the handle is pinned to another key */
  | { kind: 'key_changed'; handle: string; pinned: string };

export class Contacts {
  private byHandle = new Map<string, string>();
  private byKey = new Map<string, string>();

  /** From the stored `pin:<fqhn>` records. */
  constructor(pins: Iterable<[string, string]> = []) {
    for (const [fqhn, primary] of pins) this.apply(fqhn, primary);
  }

  keyOf(fqhn: string): string | undefined {
    return this.byHandle.get(fqhn);
  }

  handleOf(primary: string): string | undefined {
    return this.byKey.get(primary);
  }

  check(fqhn: string, primary: string): PinCheck {
    const known = this.byKey.get(primary);
    if (known !== undefined) {
      return known === fqhn ? { kind: 'pinned', handle: known } : { kind: 'relabelled', handle: known, claimed: fqhn };
    }
    const pinned = this.byHandle.get(fqhn);
    if (pinned !== undefined) return { kind: 'key_changed', handle: fqhn, pinned };
    return { kind: 'new', handle: fqhn };
  }

  /** The record that pins `fqhn` to `primary` (stored by the caller, then `apply`). */
  pinRecord(fqhn: string, primary: string): Put {
    return [keys.pin(fqhn), primary];
  }

  apply(fqhn: string, primary: string): void {
    const before = this.byHandle.get(fqhn);
    if (before !== undefined && before !== primary) this.byKey.delete(before);
    this.byHandle.set(fqhn, primary);
    this.byKey.set(primary, fqhn);
  }

  clear(): void {
    this.byHandle.clear();
    this.byKey.clear();
  }
}
