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
  /** Undoes seal() (under the previous key too, during a rotation); undefined when sealed under another key or tampered with. */
  unseal(sealed: string): string | undefined;
  /**
   * The pseudonymiser of `ID_HASH_KEY_PREVIOUS` while a rotation runs: what was stored before it is
   * found under these pseudonyms and moved to the current ones when the user is next touched.
   */
  readonly previous?: Pseudonymiser;
  /** Whether `pseudonym` is this value's, under the current key or (during a rotation) the previous one. */
  matches(kind: IdKind, value: string, pseudonym: string): boolean;
}

const KID = /^[A-Za-z0-9_-]{1,8}$/;
/** Pseudonyms cached per kind and generation (at most twice this many per kind). */
const CACHED_PER_KIND = 12_500;
/** A pseudonym's MAC: the first 22 characters of the HMAC's base64url (128 bits and 4 more). */
const MAC_CHARS = 22;

/**
 * `<kid>.<mac>` as one flat string, written into a buffer and read out once: built by
 * concatenation it would be a cons string over a slice of the whole digest's encoding, all kept.
 * 17 bytes encode to 23 characters whose first 22 are those of the whole digest's encoding.
 */
function pseudonymOf(prefix: Buffer, mac: Buffer): string {
  const out = Buffer.allocUnsafe(prefix.length + MAC_CHARS);
  prefix.copy(out, 0);
  out.write(mac.toString('base64url', 0, 17), prefix.length, MAC_CHARS, 'latin1');
  return out.toString('latin1');
}

/** `ID_HASH_KEY` is `kid:secret`; the secret must carry at least 128 bits. */
export function parseHashKey(text: string): HashKey {
  const at = text.indexOf(':');
  if (at < 1) throw new Error('ID_HASH_KEY must be kid:secret');
  const kid = text.slice(0, at);
  const secret = text.slice(at + 1);
  if (!KID.test(kid)) throw new Error('ID_HASH_KEY kid must be 1-8 characters of [A-Za-z0-9_-]');
  if (secret.length < 22) throw new Error('ID_HASH_KEY secret must be at least 22 characters');
  return { kid, secret };
}

/** The pseudonymiser of `ID_HASH_KEY` and, during a rotation, `ID_HASH_KEY_PREVIOUS`. */
export function pseudonymiserOf(current: string, previous?: string): Pseudonymiser {
  return createPseudonymiser(parseHashKey(current), previous ? parseHashKey(previous) : undefined);
}

export function createPseudonymiser(key: HashKey, previousKey?: HashKey): Pseudonymiser {
  // The kid is written into pseudonyms byte for byte (latin1): only what parseHashKey accepts.
  if (!KID.test(key.kid)) throw new Error('a hash key id must be 1-8 characters of [A-Za-z0-9_-]');
  if (previousKey && (previousKey.kid === key.kid || previousKey.secret === key.secret)) {
    throw new Error('ID_HASH_KEY_PREVIOUS must differ from ID_HASH_KEY in both key id and secret');
  }
  const previous = previousKey ? createPseudonymiser(previousKey) : undefined;
  const sealKey = createHmac('sha256', key.secret).update('seal\0v1').digest();
  // Returning users repeat the same ids: a bounded cache saves five HMACs per decide. One cache per
  // kind, keyed by the value as the caller passed it, each pseudonym kept as one flat string (a
  // composite key and a pseudonym built by concatenation kept cons strings, a slice and the whole
  // digest's encoding alive). What a cache keeps is what every full collection marks.
  const caches: Record<IdKind, ReadCache<string, string>> = {
    user: new ReadCache(CACHED_PER_KIND),
    device: new ReadCache(CACHED_PER_KIND),
    ip: new ReadCache(CACHED_PER_KIND),
    net: new ReadCache(CACHED_PER_KIND),
  };
  const prefix = Buffer.from(`${key.kid}.`, 'latin1');
  const self: Pseudonymiser = {
    kid: key.kid,
    ...(previous ? { previous } : {}),
    matches(kind, value, pseudonym) {
      // The kid in front says which key made it, so at most one HMAC is computed.
      if (pseudonym.startsWith(`${key.kid}.`)) return self.id(kind, value) === pseudonym;
      return previous?.matches(kind, value, pseudonym) === true;
    },
    seal(plain) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', sealKey, iv);
      const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
      return `${key.kid}.${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')}`;
    },
    unseal(sealed) {
      const sealedPrefix = `${key.kid}.`;
      if (!sealed.startsWith(sealedPrefix)) return previous?.unseal(sealed);
      try {
        const raw = Buffer.from(sealed.slice(sealedPrefix.length), 'base64url');
        const decipher = createDecipheriv('aes-256-gcm', sealKey, raw.subarray(0, 12));
        decipher.setAuthTag(raw.subarray(12, 28));
        return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
      } catch {
        return undefined;
      }
    },
    id(kind, value) {
      const cache = caches[kind];
      const hit = cache.get(value);
      if (hit) return hit;
      const mac = createHmac('sha256', key.secret).update(kind).update('\0').update(value).digest();
      const pseudonym = pseudonymOf(prefix, mac);
      cache.set(value, pseudonym);
      return pseudonym;
    },
  };
  return self;
}
