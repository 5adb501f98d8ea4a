import { createHmac } from 'node:crypto';

export interface HashKey {
  /** Short key id stored in front of every pseudonym, so keys can rotate. */
  readonly kid: string;
  readonly secret: string;
}

export type IdKind = 'user' | 'device' | 'ip' | 'net';

export interface Pseudonymiser {
  readonly kid: string;
  /** HMAC-SHA256 under the current key: `<kid>.<128-bit base64url>`. Raw ids never reach a store or a log. */
  id(kind: IdKind, value: string): string;
}

/** `ID_HASH_KEY` is `kid:secret`; the secret must carry at least 128 bits. */
export function parseHashKey(text: string): HashKey {
  const at = text.indexOf(':');
  if (at < 1) throw new Error('ID_HASH_KEY must be kid:secret');
  const kid = text.slice(0, at);
  const secret = text.slice(at + 1);
  if (!/^[A-Za-z0-9_-]{1,8}$/.test(kid)) throw new Error('ID_HASH_KEY kid must be 1-8 characters of [A-Za-z0-9_-]');
  if (secret.length < 22) throw new Error('ID_HASH_KEY secret must be at least 22 characters');
  return { kid, secret };
}

export function createPseudonymiser(key: HashKey): Pseudonymiser {
  return {
    kid: key.kid,
    id(kind, value) {
      const mac = createHmac('sha256', key.secret).update(kind).update('\0').update(value).digest('base64url');
      return `${key.kid}.${mac.slice(0, 22)}`;
    },
  };
}
