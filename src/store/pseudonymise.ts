import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { ReadCache } from '../lib/read-cache.js';

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
  /** AES-256-GCM under a key derived from the same secret: for values a store must give back (session URLs). */
  seal(plain: string): string;
  /** Undoes seal(); undefined when the value was sealed under another key or tampered with. */
  unseal(sealed: string): string | undefined;
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
  const sealKey = createHmac('sha256', key.secret).update('seal\0v1').digest();
  // Returning users repeat the same ids: a bounded cache saves five HMACs (~25 µs) per decide.
  const cache = new ReadCache<string, string>(50_000);
  return {
    kid: key.kid,
    seal(plain) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', sealKey, iv);
      const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
      return `${key.kid}.${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')}`;
    },
    unseal(sealed) {
      const prefix = `${key.kid}.`;
      if (!sealed.startsWith(prefix)) return undefined;
      try {
        const raw = Buffer.from(sealed.slice(prefix.length), 'base64url');
        const decipher = createDecipheriv('aes-256-gcm', sealKey, raw.subarray(0, 12));
        decipher.setAuthTag(raw.subarray(12, 28));
        return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
      } catch {
        return undefined;
      }
    },
    id(kind, value) {
      const cacheKey = `${kind}\0${value}`;
      const hit = cache.get(cacheKey);
      if (hit) return hit;
      const mac = createHmac('sha256', key.secret).update(kind).update('\0').update(value).digest('base64url');
      const pseudonym = `${key.kid}.${mac.slice(0, 22)}`;
      cache.set(cacheKey, pseudonym);
      return pseudonym;
    },
  };
}
