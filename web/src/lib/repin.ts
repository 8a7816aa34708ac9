/**
 * Trusting a contact's new key, when the person chooses to after a "key
 * changed" warning (a new device, say, checked another way): the handle
 * is pinned to the new key, the old key loses the handle, and the
 * conversation moves to the new key with a note saying when. Messages the
 * new key sent before stay what they were: warnings.
 */
import type { Contacts } from './contacts';
import { change, merge, type Change, type History } from './history';

export function trustNewKey(history: History, contacts: Contacts, old: string, now = new Date()): Change {
  const conv = history.model.convs[old];
  const next = conv?.newKey;
  if (!conv || !next) return change();
  const note = {
    id: `note:trusted:${now.getTime()}`,
    dir: 'in' as const,
    kind: 'note' as const,
    text: `You chose to trust ${conv.fqhn}'s new key (${next.slice(8, 20)}…) instead of ${old.slice(8, 20)}….`,
    ts: now.toISOString(),
  };
  return merge(
    change([contacts.pinRecord(conv.fqhn, next)], () => contacts.apply(conv.fqhn, next)),
    history.rekey(old, next, note),
  );
}
