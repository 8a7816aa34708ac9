import { describe, expect, it } from 'vitest';
import { Contacts } from './contacts';
import { isFqhn, sortTime } from './trust';
import { StrictJsonError, strictParse } from './crypto/strictjson';

describe('the pin map', () => {
  it('checks both ways', () => {
    const c = new Contacts([['alice@kez.lat', 'K1']]);
    expect(c.check('alice@kez.lat', 'K1')).toEqual({ kind: 'pinned', handle: 'alice@kez.lat' });
    expect(c.check('bob@kez.lat', 'K2')).toEqual({ kind: 'new', handle: 'bob@kez.lat' });
    expect(c.check('alice@kez.lat', 'K2')).toEqual({ kind: 'key_changed', handle: 'alice@kez.lat', pinned: 'K1' });
    expect(c.check('mallory@kez.lat', 'K1')).toEqual({ kind: 'relabelled', handle: 'alice@kez.lat', claimed: 'mallory@kez.lat' });
  });
});

describe('the handle grammar, whole string', () => {
  it('refuses look-alikes', () => {
    expect(isFqhn('alice@kez.lat')).toBe(true);
    expect(isFqhn('alice@127.0.0.1:8080')).toBe(true);
    for (const bad of ['alice@kez.lat ', ' alice@kez.lat', 'ali\u200bce@kez.lat', 'alice@kez.lat\n', 'Alice@kez.lat', 'al@kez.lat', 'alice', 'alice@', 'a\u202elice@kez.lat', 42, null]) {
      expect([bad, isFqhn(bad)]).toEqual([bad, false]);
    }
  });
});

describe('order', () => {
  it('the envelope time, never later than the server time or now', () => {
    const now = Date.parse('2026-05-25T04:00:00Z');
    expect(sortTime('9999-01-01T00:00:00Z', '2026-05-25T03:00:00Z', now)).toBe('2026-05-25T03:00:00.000Z');
    expect(sortTime('2026-05-25T02:00:00Z', '2026-05-25T03:00:00Z', now)).toBe('2026-05-25T02:00:00.000Z');
    expect(sortTime('9999-01-01T00:00:00Z', 'junk', now)).toBe('2026-05-25T04:00:00.000Z');
  });
});

describe('strict JSON', () => {
  it('refuses repeated keys at any depth, lone surrogates and deep nesting', () => {
    expect(strictParse('{"a":1,"b":{"a":2},"c":[{"a":3}]}')).toEqual({ a: 1, b: { a: 2 }, c: [{ a: 3 }] });
    for (const bad of ['{"a":1,"a":2}', '{"x":{"a":1,"\\u0061":2}}', '[{"k":1,"k":1}]', '"\\ud800"', '['.repeat(70) + ']'.repeat(70)]) {
      expect(() => strictParse(bad)).toThrow(StrictJsonError);
    }
    expect(strictParse('{"a":"{\\"a\\":1,","a2":1}')).toEqual({ a: '{"a":1,', a2: 1 });
  });
});
