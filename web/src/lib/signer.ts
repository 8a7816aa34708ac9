/**
 * Who signs this browser's requests, and in which form. The app signs the
 * named form (the server's domain in every signed text). A server from
 * before that form refuses it with 401; the link then tries the unnamed
 * form once and keeps whichever the server accepts, so the app works with
 * both while servers move over. A server that accepts the named form never
 * sees the older one from this app.
 */
import type { SignedFor } from './crypto/auth';
import type { KeyPair } from './crypto/keys';

export class Signer {
  /** false once this server has refused the named form and taken the older one */
  named = true;

  constructor(
    readonly key: KeyPair,
    /** the domain of the home server (the part after `@` in the account's handle) */
    readonly server: string,
  ) {}

  get signedFor(): SignedFor {
    return this.named ? this.server : null;
  }
}
