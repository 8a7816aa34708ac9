/**
 * Creating an account asks the server first (`GET /v1/register/check`)
 * whether the handle can be registered, before a key is made and its 24
 * words are shown: nobody should write down words for a handle they
 * cannot have. The refusal is said in a sentence a person can act on.
 */
import * as api from './api';

/** The sentence for a refused handle. */
export function refusal(handle: string, error: { code: string; message: string; retry_after?: number }): string {
  switch (error.code) {
    case 'handle_taken':
      return `${handle} is taken. Try another handle.`;
    case 'reserved_handle':
      return `${handle} is reserved on this server. Try another handle.`;
    case 'invalid_handle':
      return 'A handle is 3–32 characters of a-z, 0-9, _ and -, starting with a letter or digit.';
    case 'wrong_server':
      return `${handle} belongs to another server. Type just the name, without @ and a server.`;
    case 'rate_limited': {
      const wait = error.retry_after ?? 0;
      const when = wait >= 120 ? `${Math.ceil(wait / 60)} minutes` : `${Math.max(wait, 1)} seconds`;
      return `Too many accounts were created from your network just now. Try again in ${when}.`;
    }
    default:
      return error.message;
  }
}

/** null when `handle` can be registered now, else why not. */
export async function whyNot(handle: string): Promise<string | null> {
  const answer = await api.checkRegister(handle);
  return answer.available ? null : refusal(handle, answer.error);
}
