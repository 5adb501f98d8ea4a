import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Didit webhook signatures (reference §5.5), as pure functions over the raw bytes. V2 is an HMAC of a
 * canonical re-serialisation, so it survives proxies that re-encode JSON; X-Signature covers the exact
 * bytes; X-Signature-Simple covers only the envelope and never the verdict data.
 */
export type SignatureScheme = 'v2' | 'v2_ascii' | 'raw' | 'simple';

export function hmacHex(secret: string, data: string | Buffer): string {
  return createHmac('sha256', secret).update(data).digest('hex');
}

/** Sorted keys at every depth, arrays in order, compact. JSON.parse already folds 96.0 into 96. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.keys(value as Record<string, unknown>)
    .sort()
    .map((key) => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`);
  return `{${entries.join(',')}}`;
}

/** The ASCII-escaped variant: every UTF-16 code unit ≥ U+0080 written as a lowercase \uxxxx. */
export function asciiEscape(text: string): string {
  return text.replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function simpleMessage(body: Record<string, unknown>): string {
  const field = (name: string) => (body[name] === undefined || body[name] === null ? '' : String(body[name]));
  return `${field('timestamp')}:${field('session_id')}:${field('status')}:${field('webhook_type')}`;
}

/** Constant-time compare of two hex MACs; anything that is not 64 hex characters simply fails. */
export function hexEquals(expectedHex: string, presented: unknown): boolean {
  if (typeof presented !== 'string' || !/^[0-9a-fA-F]{64}$/.test(presented)) return false;
  const a = Buffer.from(expectedHex, 'hex');
  const b = Buffer.from(presented, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

export interface SignatureHeaders {
  readonly 'x-signature'?: string | undefined;
  readonly 'x-signature-v2'?: string | undefined;
  readonly 'x-signature-simple'?: string | undefined;
  readonly 'x-timestamp'?: string | undefined;
}

export type VerifyFailure = 'missing_signature' | 'bad_signature' | 'stale' | 'timestamp_mismatch' | 'malformed';

export type VerifyResult =
  | { ok: true; scheme: SignatureScheme; envelopeOnly: boolean; body: Record<string, unknown>; timestamp: number; secretIndex: number }
  | { ok: false; reason: VerifyFailure };

export interface VerifyInput {
  readonly rawBody: Buffer;
  readonly headers: SignatureHeaders;
  /** Current secret first, then the previous one during a rotation. */
  readonly secrets: readonly string[];
  /** Epoch seconds. */
  readonly nowS: number;
  readonly toleranceS: number;
}

function matchesAny(secrets: readonly string[], message: string | Buffer, presented: unknown): number {
  for (let i = 0; i < secrets.length; i++) if (hexEquals(hmacHex(secrets[i]!, message), presented)) return i;
  return -1;
}

export function verifyWebhookSignature(input: VerifyInput): VerifyResult {
  const { headers, rawBody, secrets } = input;
  const v2 = headers['x-signature-v2'];
  const raw = headers['x-signature'];
  const simple = headers['x-signature-simple'];
  if (!v2 && !raw && !simple) return { ok: false, reason: 'missing_signature' };

  let body: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(rawBody.toString('utf8'));
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return { ok: false, reason: 'malformed' };
    body = parsed as Record<string, unknown>;
  } catch {
    return { ok: false, reason: 'malformed' };
  }

  let scheme: SignatureScheme | undefined;
  let secretIndex = -1;
  if (v2) {
    const canonical = canonicalJson(body);
    secretIndex = matchesAny(secrets, canonical, v2);
    if (secretIndex >= 0) scheme = 'v2';
    else {
      secretIndex = matchesAny(secrets, asciiEscape(canonical), v2);
      if (secretIndex >= 0) scheme = 'v2_ascii';
    }
  }
  if (!scheme && raw) {
    secretIndex = matchesAny(secrets, rawBody, raw);
    if (secretIndex >= 0) scheme = 'raw';
  }
  if (!scheme && simple) {
    secretIndex = matchesAny(secrets, simpleMessage(body), simple);
    if (secretIndex >= 0) scheme = 'simple';
  }
  if (!scheme) return { ok: false, reason: 'bad_signature' };

  // Freshness comes from the signed body; the header is not covered by V2 and must merely agree.
  const timestamp = body.timestamp;
  if (typeof timestamp !== 'number' || !Number.isInteger(timestamp)) return { ok: false, reason: 'stale' };
  const headerTs = headers['x-timestamp'];
  if (headerTs !== undefined && headerTs !== String(timestamp)) return { ok: false, reason: 'timestamp_mismatch' };
  if (Math.abs(input.nowS - timestamp) > input.toleranceS) return { ok: false, reason: 'stale' };

  return { ok: true, scheme, envelopeOnly: scheme === 'simple', body, timestamp, secretIndex };
}

/** Signs a body with all three schemes, as Didit does (used by the simulator and the tests). */
export function signWebhook(rawBody: string, secret: string): Record<string, string> {
  const body = JSON.parse(rawBody) as Record<string, unknown>;
  return {
    'x-timestamp': String(body.timestamp ?? ''),
    'x-signature': hmacHex(secret, Buffer.from(rawBody, 'utf8')),
    'x-signature-v2': hmacHex(secret, canonicalJson(body)),
    'x-signature-simple': hmacHex(secret, simpleMessage(body)),
  };
}
