/**
 * The 32-byte seed as 24 BIP-39 English words (entropy = seed).
 */
import { entropyToMnemonic, mnemonicToEntropy, validateMnemonic } from '@scure/bip39';
import { wordlist } from '@scure/bip39/wordlists/english.js';

export function seedToMnemonic(seed: Uint8Array): string {
  if (seed.length !== 32) throw new Error('a seed is 32 bytes');
  return entropyToMnemonic(seed, wordlist);
}

/** Words as a person typed them: any spacing, any case. */
export function normaliseWords(text: string): string {
  return text.trim().toLowerCase().split(/\s+/).join(' ');
}

export function mnemonicToSeed(text: string): Uint8Array {
  const words = normaliseWords(text);
  if (words.split(' ').length !== 24) throw new Error('the recovery phrase is 24 words');
  if (!validateMnemonic(words, wordlist)) {
    throw new Error('these words are not a valid recovery phrase (a word is misspelt or out of place)');
  }
  return mnemonicToEntropy(words, wordlist);
}

export function isWord(word: string): boolean {
  return wordlist.includes(word);
}

/**
 * What is wrong with typed recovery words, in a sentence naming the word
 * (its position and spelling), or null when they are 24 known words in a
 * valid order. A person fixes "word 7, 'abandn'" faster than "invalid".
 */
export function wordProblem(text: string): string | null {
  const words = normaliseWords(text).split(' ').filter((w) => w !== '');
  const unknown = words.map((w, i) => [w, i] as const).filter(([w]) => !wordlist.includes(w));
  if (unknown.length) {
    const named = unknown.slice(0, 3).map(([w, i]) => `word ${i + 1}, "${w.length > 20 ? w.slice(0, 19) + '…' : w}"`);
    const more = unknown.length > 3 ? ` and ${unknown.length - 3} more` : '';
    const hint = unknown.length === 1 ? suggestion(unknown[0][0]) : '';
    return `${unknown.length === 1 ? 'This is' : 'These are'} not on the list of recovery words: ${named.join(', ')}${more}. Check the spelling against what you wrote down.${hint}`;
  }
  if (words.length !== 24) return `The recovery phrase is 24 words; you typed ${words.length}.`;
  if (!validateMnemonic(words.join(' '), wordlist)) {
    return 'Every word is a recovery word, but not in this order: a word is out of place or swapped for another. Check them against what you wrote down.';
  }
  return null;
}

/** " Did you mean …?" for a word one letter away (or a known 4-letter prefix), else ''. */
function suggestion(word: string): string {
  const near = wordlist.filter((w) => w.slice(0, 4) === word.slice(0, 4) || oneEdit(w, word)).slice(0, 3);
  return near.length ? ` Did you mean ${near.join(' or ')}?` : '';
}

function oneEdit(a: string, b: string): boolean {
  if (Math.abs(a.length - b.length) > 1) return false;
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return a.slice(i + 1) === b.slice(i + 1) || a.slice(i) === b.slice(i + 1) || a.slice(i + 1) === b.slice(i);
}
