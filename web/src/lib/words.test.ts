/** The log-in error names the word that is wrong. */
import { describe, expect, it } from 'vitest';
import { seedToMnemonic, wordProblem } from './crypto/mnemonic';

const words = seedToMnemonic(new Uint8Array(32).fill(7)).split(' ');

describe('wordProblem', () => {
  it('accepts the 24 words in any spacing and case', () => {
    expect(wordProblem(words.join('  \n').toUpperCase())).toBeNull();
  });

  it('names a misspelt word by position and spelling, with a suggestion', () => {
    const typo = [...words];
    typo[6] = 'abandn';
    const problem = wordProblem(typo.join(' '))!;
    expect(problem).toContain('word 7, "abandn"');
    expect(problem).toContain('Did you mean abandon');
  });

  it('names several unknown words, counts words, and catches a wrong order', () => {
    const bad = [...words];
    bad[0] = 'xyzzy';
    bad[23] = 'plugh';
    expect(wordProblem(bad.join(' '))).toMatch(/word 1, "xyzzy", word 24, "plugh"/);
    expect(wordProblem(words.slice(0, 23).join(' '))).toBe('The recovery phrase is 24 words; you typed 23.');
    const swapped = [...words];
    [swapped[0], swapped[1]] = ['zoo', 'abandon'];
    expect(wordProblem(swapped.join(' '))).toMatch(/not in this order|out of place/);
  });
});
