/** Links in messages: http and https only, sentence punctuation left out. */
import { describe, expect, it } from 'vitest';
import { linkify, safeHref } from './linkify';

describe('linkify', () => {
  it('cuts text into plain and link pieces', () => {
    expect(linkify('see https://kez.lat/a?b=1#c, then http://x.org.')).toEqual([
      { text: 'see ' },
      { text: 'https://kez.lat/a?b=1#c', href: 'https://kez.lat/a?b=1#c' },
      { text: ', then ' },
      { text: 'http://x.org', href: 'http://x.org/' },
      { text: '.' },
    ]);
  });

  it('keeps a closing parenthesis that belongs to the address', () => {
    expect(linkify('(https://en.wikipedia.org/wiki/Foo_(bar))')).toEqual([
      { text: '(' },
      { text: 'https://en.wikipedia.org/wiki/Foo_(bar)', href: 'https://en.wikipedia.org/wiki/Foo_(bar)' },
      { text: ')' },
    ]);
  });

  it('never links other schemes, and leaves markup as text', () => {
    for (const text of ['javascript:alert(1)', 'data:text/html,<b>x</b>', 'file:///etc/passwd', 'ftp://x.org', '<a href="javascript:x">y</a>']) {
      expect(linkify(text)).toEqual([{ text }]);
    }
    expect(linkify('https://x.org/"><img src=x onerror=alert(1)>')).toEqual([
      { text: 'https://x.org/', href: 'https://x.org/' },
      { text: '"><img src=x onerror=alert(1)>' },
    ]);
    expect(safeHref('https://')).toBeNull();
    expect(safeHref('HTTPS://KEZ.LAT')).toBe('https://kez.lat/');
  });

  it('gives back plain text unchanged, empty included', () => {
    expect(linkify('')).toEqual([{ text: '' }]);
    expect(linkify('no links here')).toEqual([{ text: 'no links here' }]);
    expect(linkify('https://a.org https://b.org').filter((p) => p.href).length).toBe(2);
  });
});
