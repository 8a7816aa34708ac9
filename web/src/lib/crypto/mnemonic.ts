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
