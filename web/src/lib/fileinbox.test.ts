/**
 * Received files: keyed by sender and message, typed by their bytes,
 * named visibly, pieces under a quota and expired with a note.
 */
import { describe, expect, it } from 'vitest';
import { chunkedHeader, fileChunk, inlineFile } from './crypto/plaintext';
import { CHUNK_SIZE, OPAQUE, safeMime, saveName, visibleName } from './files';
import { FileUrls } from './fileurls';
import { ORPHAN_MS, SENDER_QUOTA } from './fileinbox';
import { keys } from './storage';
import { REFUSED } from './types';
import { NOW, alice, bobInbox, freshStorage, item, mallory } from './testkit';

const A = 'alice@kez.lat';
const M = 'mallory@kez.lat';
const PNG = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]);
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) % 251);

async function blobOf(storage: ReturnType<typeof freshStorage>, key: string) {
  const blob = await storage.get<Blob>(key);
  return blob ? { type: blob.type, bytes: new Uint8Array(await blob.arrayBuffer()) } : undefined;
}

describe('received files', () => {
  it('a chunked file in any order, across a reload, stored under sender and message', async () => {
    const data = bytes(CHUNK_SIZE * 2 + 10, 1);
    const header = chunkedHeader('notes.bin', 'application/octet-stream', data, 'f1');
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, fileChunk('f1', data, 2), { seq: 1 }));
    await b.inbox.enqueue(item(alice, A, header, { seq: 2 }));
    expect(b.model.msgs[alice.primary][0].file?.received).toBe(1);
    const again = await bobInbox(b.storage);
    await again.inbox.enqueue(item(alice, A, fileChunk('f1', data, 0), { seq: 3 }));
    await again.inbox.enqueue(item(alice, A, fileChunk('f1', data, 1), { seq: 4 }));
    const msg = again.model.msgs[alice.primary][0];
    expect(msg.file?.state).toBe('ready');
    expect(msg.file?.key).toBe(keys.file(alice.primary, 'in:2'));
    expect((await blobOf(b.storage, msg.file!.key))?.bytes).toEqual(data);
    // the pieces are gone
    expect(await b.storage.keysWith('chunk:')).toEqual([]);
  });

  it("another sender's colliding file_id cannot replace a file; a reused file_id is refused", async () => {
    const good = bytes(CHUNK_SIZE + 5, 2);
    const evil = bytes(CHUNK_SIZE + 5, 3);
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, inlineFile('contract.txt', 'text/plain', bytes(100, 9)), { seq: 1 }));
    const h = chunkedHeader('contract.txt', 'text/plain', good, 'same');
    await b.inbox.enqueue(item(alice, A, h, { seq: 2 }));
    await b.inbox.enqueue(item(alice, A, fileChunk('same', good, 0), { seq: 3 }));
    // mallory aims at alice's ids: the inline one by its old global name, and the chunked one
    await b.inbox.enqueue(item(mallory, M, chunkedHeader('x', 'text/plain', evil, 'inline-1'), { seq: 4 }));
    await b.inbox.enqueue(item(mallory, M, fileChunk('same', evil, 1), { seq: 5 }));
    await b.inbox.enqueue(item(mallory, M, chunkedHeader('contract.txt', 'text/plain', evil, 'same'), { seq: 6 }));
    await b.inbox.enqueue(item(mallory, M, fileChunk('same', evil, 0), { seq: 7 }));
    await b.inbox.enqueue(item(alice, A, fileChunk('same', good, 1), { seq: 8 }));
    const aliceFile = b.model.msgs[alice.primary][1].file!;
    expect(aliceFile.state).toBe('ready');
    expect((await blobOf(b.storage, aliceFile.key))?.bytes).toEqual(good);
    expect((await blobOf(b.storage, keys.file(alice.primary, 'in:1')))?.bytes).toEqual(bytes(100, 9));
    // mallory's own file is hers, complete and separate
    const hers = b.model.msgs[mallory.primary].find((m) => m.id === 'in:6')!.file!;
    expect(hers.state).toBe('ready');
    expect((await blobOf(b.storage, hers.key))?.bytes).toEqual(evil);
    // alice reusing her own id for a second file is refused, the first untouched
    await b.inbox.enqueue(item(alice, A, chunkedHeader('other', 'text/plain', evil, 'same'), { seq: 9 }));
    const last = b.model.msgs[alice.primary].at(-1)!;
    expect(last.kind).toBe('warning');
    expect(last.text).toContain('reuses the id');
    expect((await blobOf(b.storage, aliceFile.key))?.bytes).toEqual(good);
  });

  it('HTML and SVG attachments are stored and offered as octet-stream; only real raster images keep their type', async () => {
    const b = await bobInbox();
    const html = new TextEncoder().encode('<script>indexedDB.open("kezchat")</script>');
    const svg = new TextEncoder().encode('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>');
    await b.inbox.enqueue(item(alice, A, inlineFile('page.html', 'text/html', html), { seq: 1 }));
    await b.inbox.enqueue(item(alice, A, inlineFile('pic.svg', 'image/svg+xml', svg), { seq: 2 }));
    await b.inbox.enqueue(item(alice, A, inlineFile('fake.png', 'image/png', html), { seq: 3 }));
    await b.inbox.enqueue(item(alice, A, inlineFile('real.png', 'image/png', PNG), { seq: 4 }));
    const files = b.model.msgs[alice.primary].map((m) => m.file!);
    expect(files.map((f) => f.mime)).toEqual([OPAQUE, OPAQUE, OPAQUE, 'image/png']);
    for (const f of files) expect((await blobOf(b.storage, f.key))?.type).toBe(f.mime);
    expect(safeMime('image/gif', PNG)).toBe(OPAQUE);
  });

  it('bidi controls and invisible characters in names are shown', async () => {
    expect(visibleName('invoice\u202efdp.exe')).toBe('invoice⟨U+202E⟩fdp.exe');
    expect(visibleName('a\u2066b\u200bc\u0007')).toBe('a⟨U+2066⟩b⟨U+200B⟩c⟨U+0007⟩');
    expect(visibleName('x'.repeat(500)).length).toBe(200);
    expect(saveName('a/b⟨U+202E⟩.exe')).toBe('a_b_U+202E_.exe');
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, inlineFile('invoice\u202efdp.exe', 'application/pdf', bytes(10, 1)), { seq: 1 }));
    expect(b.model.msgs[alice.primary][0].text).toBe('invoice⟨U+202E⟩fdp.exe');
  });

  it('orphan pieces expire with a visible note, and their bytes leave the store', async () => {
    let now = NOW;
    const b = await bobInbox(freshStorage(), () => now);
    await b.inbox.enqueue(item(alice, A, { type: 'text', text: 'hi' }, { seq: 1 }));
    for (let i = 0; i < 40; i++) await b.inbox.enqueue(item(alice, A, fileChunk(`orphan${i}`, bytes(1000, i), 0), { seq: 2 + i }));
    expect(await b.storage.keysWith('chunk:')).toHaveLength(40);
    await b.files.expire();
    expect(await b.storage.keysWith('chunk:')).toHaveLength(40);
    now += ORPHAN_MS + 1;
    await b.files.expire();
    expect(await b.storage.keysWith('chunk:')).toEqual([]);
    const note = b.model.msgs[alice.primary].at(-1)!;
    expect(note.kind).toBe('note');
    expect(note.text).toContain('40 pieces of files');
    // the note is stored too
    const again = await bobInbox(b.storage, () => now);
    expect(again.model.msgs[alice.primary].at(-1)!.kind).toBe('note');
  });

  it('pieces over the per-sender quota are dropped, with one note', async () => {
    const quota = 10_000;
    const b = await bobInbox(freshStorage(), () => NOW, quota);
    const piece = bytes(CHUNK_SIZE, 5).subarray(0, 1000);
    const fit = Math.floor(quota / 1000);
    let seq = 0;
    while (seq < fit + 5) await b.inbox.enqueue(item(mallory, M, fileChunk(`f${seq}`, piece, 0), { seq: ++seq }));
    expect(await b.storage.keysWith('chunk:')).toHaveLength(fit);
    const notes = b.model.msgs[mallory.primary].filter((m) => m.kind === 'note');
    expect(notes).toHaveLength(1);
    expect(notes[0].text).toContain('9.8 KiB');
    expect(SENDER_QUOTA).toBe(24 * 1024 * 1024);
    expect(b.inbox.cursor).toBe(fit + 5);
  });

  it('a damaged chunked file fails visibly', async () => {
    const data = bytes(CHUNK_SIZE + 1, 4);
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, A, chunkedHeader('d.bin', 'application/octet-stream', data, 'd'), { seq: 1 }));
    await b.inbox.enqueue(item(alice, A, fileChunk('d', data, 0), { seq: 2 }));
    await b.inbox.enqueue(item(alice, A, fileChunk('d', bytes(CHUNK_SIZE + 1, 5), 1), { seq: 3 }));
    const msg = b.model.msgs[alice.primary][0];
    expect(msg.file?.state).toBe('failed');
    expect(msg.error).toContain('damaged');
  });

  it('files from a sender that is not pinned never reach the store', async () => {
    const b = await bobInbox();
    await b.inbox.enqueue(item(alice, 'alice@kez.lat\u200b', inlineFile('a.png', 'image/png', PNG), { seq: 1 }));
    expect(await b.storage.keysWith('file:')).toEqual([]);
    expect(b.model.msgs[REFUSED]).toHaveLength(1);
  });
});

describe('object URLs', () => {
  it('are made once while shown and revoked when the last viewer goes', async () => {
    const storage = freshStorage();
    await storage.set('file:x', new Blob([PNG], { type: 'image/png' }));
    const made: string[] = [];
    const revoked: string[] = [];
    const urls = new FileUrls(storage, () => {
      made.push(`blob:${made.length}`);
      return made[made.length - 1];
    }, (u) => revoked.push(u));
    const [a, b2] = await Promise.all([urls.acquire('file:x'), urls.acquire('file:x')]);
    expect(a).toBe('blob:0');
    expect(b2).toBe('blob:0');
    urls.release('file:x');
    await Promise.resolve();
    expect(revoked).toEqual([]);
    urls.release('file:x');
    await new Promise((r) => setTimeout(r, 0));
    expect(revoked).toEqual(['blob:0']);
    expect(urls.live).toBe(0);
    expect(await urls.acquire('file:missing')).toBeNull();
  });
});
