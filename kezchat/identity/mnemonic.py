"""
The paper backup: a 32-byte seed as 24 BIP-39 English words (entropy = seed).
"""

from mnemonic import Mnemonic

_ENGLISH = Mnemonic("english")


def seed_to_mnemonic(seed: bytes) -> str:
    """
    The 24 words that encode C{seed}, space-separated.
    """
    if len(seed) != 32:
        raise ValueError("a seed is 32 bytes")
    return _ENGLISH.to_mnemonic(seed)


def mnemonic_to_seed(words: str) -> bytes:
    """
    The seed encoded by 24 words; tolerant of case and extra white space,
    strict about the word list and the checksum.

    (This is BIP-39's entropy, not its PBKDF2 "seed": KEZ uses the words as
    a direct encoding of the key so every client derives the same key.)
    """
    normalised = " ".join(words.lower().split())
    if len(normalised.split()) != 24:
        raise ValueError("a KEZ mnemonic has 24 words")
    try:
        entropy = _ENGLISH.to_entropy(normalised)
    except (ValueError, LookupError) as e:
        raise ValueError(f"not a valid mnemonic: {e}") from e
    return bytes(entropy)
