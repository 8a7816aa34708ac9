/** The registration pre-check's refusals, said so a person can act. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { refusal, whyNot } from './signup';
import { fetchCommand, shellWord } from './share';

afterEach(() => vi.unstubAllGlobals());

describe('asking before the words', () => {
  it('names each refusal', () => {
    expect(refusal('admin', { code: 'reserved_handle', message: "'admin' is reserved" })).toBe('admin is reserved on this server. Try another handle.');
    expect(refusal('bob', { code: 'handle_taken', message: '' })).toContain('bob is taken');
    expect(refusal('x', { code: 'rate_limited', message: '', retry_after: 600 })).toContain('10 minutes');
    expect(refusal('x', { code: 'rate_limited', message: '', retry_after: 30 })).toContain('30 seconds');
    expect(refusal('x', { code: 'something_new', message: 'a sentence' })).toBe('a sentence');
  });

  it('asks GET /v1/register/check and reads its answer', async () => {
    const asked: string[] = [];
    vi.stubGlobal('fetch', async (url: string) => {
      asked.push(url);
      return url.endsWith('=admin')
        ? new Response('{"available":false,"error":{"code":"reserved_handle","message":"reserved"}}')
        : new Response('{"available":true,"handle":"zed","fqhn":"zed@kez.lat"}');
    });
    expect(await whyNot('zed')).toBeNull();
    expect(await whyNot('admin')).toContain('reserved');
    expect(asked).toEqual(['/v1/register/check?handle=zed', '/v1/register/check?handle=admin']);
  });
});

describe('the kez-chat fetch line', () => {
  it('is a command a shell reads as one word per argument', () => {
    const b = 'ab'.repeat(32);
    expect(fetchCommand(b, 'photo.jpg')).toBe(`kez-chat fetch ${b} --out photo.jpg`);
    expect(fetchCommand(b, "it's mine; rm -rf ~.txt")).toBe(`kez-chat fetch ${b} --out 'it'\\''s mine; rm -rf ~.txt'`);
    expect(fetchCommand(b, '../../.bashrc')).toBe(`kez-chat fetch ${b} --out bashrc`);
    expect(shellWord('-n')).toBe("'-n'");
  });
});
