/**
 * The signed handle registration sent to `POST /v1/register`.
 */
import { SIGNATURE_ALG, type KeyPair } from './keys';

export interface RegistrationPayload {
  type: 'kez.chat.handle_registration';
  version: 1;
  handle: string;
  primary: string;
  server: string;
  created_at: string;
}

export interface Registration {
  kez: 'handle_registration';
  payload: RegistrationPayload;
  signature: { alg: string; key: string; sig: string };
}

export function registration(key: KeyPair, handle: string, server: string, createdAt: string): Registration {
  const payload: RegistrationPayload = {
    type: 'kez.chat.handle_registration',
    version: 1,
    handle,
    primary: key.primary,
    server,
    created_at: createdAt,
  };
  return {
    kez: 'handle_registration',
    payload,
    signature: { alg: SIGNATURE_ALG, key: key.primary, sig: key.signJcs(payload) },
  };
}
