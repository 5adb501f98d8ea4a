import { createHmac } from 'node:crypto';

/**
 * Standard Webhooks signing (https://www.standardwebhooks.com, spec v1): the receiver checks
 * `v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>` with any existing verifier library.
 */

const SECRET_PREFIX = 'whsec_';

/** `whsec_<base64>` → key bytes; the spec asks for 24 to 64 random bytes. Throws with a reason. */
export function parseSigningSecret(text: string): Buffer {
  if (!text.startsWith(SECRET_PREFIX)) throw new Error('expected whsec_<base64>');
  const encoded = text.slice(SECRET_PREFIX.length);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) throw new Error('the part after whsec_ is not base64');
  const key = Buffer.from(encoded, 'base64');
  if (key.length < 24 || key.length > 64) throw new Error(`the key is ${key.length} bytes; 24 to 64 are required`);
  return key;
}

export type SignedHeaders = {
  readonly 'webhook-id': string;
  readonly 'webhook-timestamp': string;
  readonly 'webhook-signature': string;
};

/**
 * Headers for one delivery attempt. Every key signs: during a rotation the receiver accepts the
 * message with either its old or its new secret (the header is a space-separated list).
 */
export function signEvent(keys: readonly Buffer[], id: string, timestampS: number, body: string): SignedHeaders {
  const signed = `${id}.${timestampS}.${body}`;
  const signatures = keys.map((key) => `v1,${createHmac('sha256', key).update(signed).digest('base64')}`);
  return { 'webhook-id': id, 'webhook-timestamp': String(timestampS), 'webhook-signature': signatures.join(' ') };
}
