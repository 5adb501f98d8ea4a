import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Didit webhook signatures (reference §5.5), as pure functions over the raw bytes. V2 is an HMAC of a
 * canonical re-serialisation, so it survives proxies that re-encode JSON; X-Signature covers the exact
 * bytes; X-Signature-Simple covers only the envelope and never the verdict data.
 *
 * Didit's server (the helpers published in didit-protocol/plugin-wordpress tests/generate-fixtures.py)
 * signs V2 over Python's `json.dumps(shorten_floats(body), sort_keys=True, separators=(',', ':'),
 * ensure_ascii=False)`, where shorten_floats turns every float with an integral value into an int.
 * So a number is written as: an int exactly as sent (Python ints have no precision limit); an integral
 * float as the exact integer of its double (`int(1e23)` is 99999999999999991611392, not 1e+23); any
 * other float as Python's repr (`1e-05`, `0.0001`, `95.4`). Keys sort by code point.
 */
export type SignatureScheme = 'v2' | 'v2_ascii' | 'raw' | 'simple';

export class CanonicalFormError extends Error {
  override readonly name = 'CanonicalFormError';
}

/** Didit's bodies nest about six levels; anything far deeper is not Didit and is refused before any recursive work. */
export const MAX_WEBHOOK_DEPTH = 32;

export function hmacHex(secret: string, data: string | Buffer): string {
  return createHmac('sha256', secret).update(data).digest('hex');
}

/** Python's repr() of a finite, non-integral double: shortest round-trip digits, exponent below 1e-4 or from 1e16. */
export function pythonFloatRepr(n: number): string {
  if (!Number.isFinite(n)) return Number.isNaN(n) ? 'NaN' : n > 0 ? 'Infinity' : '-Infinity';
  if (n === 0) return Object.is(n, -0) ? '-0.0' : '0.0';
  const magnitude = Math.abs(n);
  // Between 1e-4 and 1e16 both languages print the shortest digits in fixed notation; only a whole
  // value differs (Python adds ".0"), and shorten_floats never lets one reach here.
  if (magnitude >= 1e-4 && magnitude < 1e16 && !Number.isInteger(n)) return String(n);
  const [mantissa, exponent] = magnitude.toExponential().split('e') as [string, string];
  const digits = mantissa.replace('.', '');
  const decpt = Number(exponent) + 1;
  const sign = n < 0 ? '-' : '';
  if (decpt <= -4 || decpt > 16) {
    const e = decpt - 1;
    return `${sign}${digits[0]}${digits.length > 1 ? `.${digits.slice(1)}` : ''}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
  }
  if (decpt <= 0) return `${sign}0.${'0'.repeat(-decpt)}${digits}`;
  if (decpt >= digits.length) return `${sign}${digits}${'0'.repeat(decpt - digits.length)}.0`;
  return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
}

/** A double as Didit writes it after shorten_floats. */
export function pythonNumber(n: number): string {
  return Number.isInteger(n) ? BigInt(n).toString() : pythonFloatRepr(n);
}

/** Python's str ordering: by code point (JS's `<` orders UTF-16 units, which differ above U+D7FF). */
export function codePointCompare(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates encode code points above U+FFFF: they sort after every other BMP unit.
    if (x >= 0xd800 && y >= 0xd800) {
      x = x <= 0xdfff ? x + 0x10000 : x;
      y = y <= 0xdfff ? y + 0x10000 : y;
    }
    return x - y;
  }
  return a.length - b.length;
}

/** Python's ensure_ascii=False string form; JSON.stringify writes the same escapes for well-formed text. */
const pythonString = (text: string): string => JSON.stringify(text);

/**
 * The canonical form of a JS value (the simulator and signWebhook). JS cannot tell 100.0 from 100, and
 * after shorten_floats Python cannot either: the two agree for every value JSON.parse can hold.
 */
export function canonicalJson(value: unknown, maxDepth = Infinity, depth = 1): string {
  if (typeof value === 'number')
    return Number.isSafeInteger(value) ? String(value === 0 ? 0 : value) : pythonNumber(value);
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (depth > maxDepth) throw new CanonicalFormError('too deep');
  if (Array.isArray(value))
    return `[${value.map((item) => (item === undefined ? 'null' : canonicalJson(item, maxDepth, depth + 1))).join(',')}]`;
  const record = value as Record<string, unknown>;
  const entries = Object.keys(record)
    .filter((key) => record[key] !== undefined)
    .sort(codePointCompare)
    .map((key) => `${pythonString(key)}:${canonicalJson(record[key], maxDepth, depth + 1)}`);
  return `{${entries.join(',')}}`;
}

/** Ints of 16 digits or more may not survive JSON.parse (2^53): only then is the text itself read. */
const LONG_DIGITS = /[0-9]{16}/;

/**
 * The V2 canonical form of a received body, by the cheapest exact route: JSON.parse (native and
 * iterative, so nesting cannot overflow the stack) then the depth-capped walk; the text-based
 * canonicaliser when long digit runs could be ints JSON.parse would round.
 */
export function canonicalOfBody(text: string, maxDepth = MAX_WEBHOOK_DEPTH): string {
  if (LONG_DIGITS.test(text)) return canonicalFromText(text, maxDepth);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new CanonicalFormError('invalid JSON');
  }
  return canonicalJson(parsed, maxDepth);
}

/** Python's ensure_ascii: every UTF-16 code unit outside printable ASCII (DEL included) as a lowercase \uxxxx. */
export function asciiEscape(text: string): string {
  return text.replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** True when the JSON text nests deeper than `cap`: one linear scan, no parsing, no recursion. */
export function nestsDeeperThan(text: string, cap: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > cap) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
/** JSON's three literals, as they are written. */
const LITERALS = ['true', 'false', 'null'] as const;
// biome-ignore lint/suspicious/noControlCharactersInRegex: JSON forbids raw control characters in strings; the scanner must match exactly that range.
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const WHITESPACE = /[ \t\n\r]*/y;

/**
 * The V2 canonical form computed from the received text, as Didit's server would print the same data.
 * It reads numbers from their text because JSON.parse forgets what Didit sent: 12345678901234567890 (an
 * int, printed exactly) and 1e-05 (a float) would both be rounded. Strict JSON; depth must be checked first
 * (nestsDeeperThan), the recursion here is bounded by it.
 */
export function canonicalFromText(text: string, maxDepth = MAX_WEBHOOK_DEPTH): string {
  let at = 0;
  const fail = (): never => {
    throw new CanonicalFormError(`invalid JSON at ${at}`);
  };
  const skip = () => {
    WHITESPACE.lastIndex = at;
    WHITESPACE.test(text);
    at = WHITESPACE.lastIndex;
  };
  const readString = (): string => {
    STRING.lastIndex = at;
    if (!STRING.test(text)) fail();
    const token = text.slice(at, STRING.lastIndex);
    at = STRING.lastIndex;
    // Without escapes the token is already Python's form; with them, decode and re-encode.
    return token.includes('\\') ? pythonString(JSON.parse(token) as string) : token;
  };
  const value = (depth: number): string => {
    skip();
    const c = text[at];
    if ((c === '{' || c === '[') && depth > maxDepth) throw new CanonicalFormError('too deep');
    if (c === '{') {
      at++;
      const members = new Map<string, string>();
      skip();
      if (text[at] === '}') {
        at++;
        return '{}';
      }
      for (;;) {
        skip();
        const key = readString();
        skip();
        if (text[at++] !== ':') fail();
        // Python keeps the last of duplicate keys, as JSON.parse does.
        members.set(JSON.parse(key) as string, value(depth + 1));
        skip();
        const next = text[at++];
        if (next === '}') break;
        if (next !== ',') fail();
      }
      const keys = [...members.keys()].sort(codePointCompare);
      return `{${keys.map((key) => `${pythonString(key)}:${members.get(key)}`).join(',')}}`;
    }
    if (c === '[') {
      at++;
      const items: string[] = [];
      skip();
      if (text[at] === ']') {
        at++;
        return '[]';
      }
      for (;;) {
        items.push(value(depth + 1));
        skip();
        const next = text[at++];
        if (next === ']') break;
        if (next !== ',') fail();
      }
      return `[${items.join(',')}]`;
    }
    if (c === '"') return readString();
    for (const literal of LITERALS) {
      if (text.startsWith(literal, at)) {
        at += literal.length;
        return literal;
      }
    }
    NUMBER.lastIndex = at;
    const match = NUMBER.exec(text);
    if (!match) return fail();
    at = NUMBER.lastIndex;
    // An int token is a Python int: printed as sent (only "-0" changes, to "0").
    if (match[1] === undefined && match[2] === undefined) return match[0] === '-0' ? '0' : match[0];
    return pythonNumber(Number(match[0]));
  };
  const out = value(1);
  skip();
  if (at !== text.length) fail();
  return out;
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

export type VerifyFailure =
  | 'missing_signature'
  | 'bad_signature'
  | 'stale'
  | 'timestamp_mismatch'
  | 'malformed'
  | 'too_deep';

export type VerifyResult =
  | {
      ok: true;
      scheme: SignatureScheme;
      envelopeOnly: boolean;
      body: Record<string, unknown>;
      timestamp: number;
      secretIndex: number;
    }
  | { ok: false; reason: VerifyFailure };

export interface VerifyInput {
  readonly rawBody: Buffer;
  readonly headers: SignatureHeaders;
  /** Current secret first, then the previous one during a rotation. */
  readonly secrets: readonly string[];
  /** Epoch seconds. */
  readonly nowS: number;
  readonly toleranceS: number;
  /**
   * False: only the raw-bytes MAC is tried (a source that keeps failing gets no parsing at all).
   * Didit always sends X-Signature, so its deliveries still verify.
   */
  readonly allowReparse?: boolean;
  /** Dead-letter replay: the delivery was fresh when it arrived; skip the window, keep every other check. */
  readonly ignoreFreshness?: boolean;
}

function matchesAny(secrets: readonly string[], message: string | Buffer, presented: unknown): number {
  for (let i = 0; i < secrets.length; i++) if (hexEquals(hmacHex(secrets[i]!, message), presented)) return i;
  return -1;
}

type Parsed = { ok: true; body: Record<string, unknown> } | { ok: false; reason: 'malformed' | 'too_deep' };

function parseObject(text: string): Parsed {
  if (nestsDeeperThan(text, MAX_WEBHOOK_DEPTH)) return { ok: false, reason: 'too_deep' };
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
      return { ok: false, reason: 'malformed' };
    return { ok: true, body: parsed as Record<string, unknown> };
  } catch {
    return { ok: false, reason: 'malformed' };
  }
}

/**
 * Cheapest first: the raw-bytes MAC (one HMAC, no parsing) is what Didit's deliveries pass. Only when
 * it fails and V2 is present is the body depth-checked and canonicalised; Simple comes last.
 */
export function verifyWebhookSignature(input: VerifyInput): VerifyResult {
  const { headers, rawBody, secrets } = input;
  const v2 = headers['x-signature-v2'];
  const raw = headers['x-signature'];
  const simple = headers['x-signature-simple'];
  if (!v2 && !raw && !simple) return { ok: false, reason: 'missing_signature' };
  const reparse = input.allowReparse !== false;

  let scheme: SignatureScheme | undefined;
  let secretIndex = -1;
  if (raw) {
    secretIndex = matchesAny(secrets, rawBody, raw);
    if (secretIndex >= 0) scheme = 'raw';
  }
  let text: string | undefined;
  if (!scheme && reparse && v2) {
    text = rawBody.toString('utf8');
    let canonical: string;
    try {
      canonical = canonicalOfBody(text);
    } catch (error) {
      return { ok: false, reason: (error as Error).message === 'too deep' ? 'too_deep' : 'malformed' };
    }
    secretIndex = matchesAny(secrets, canonical, v2);
    if (secretIndex >= 0) scheme = 'v2';
    else {
      secretIndex = matchesAny(secrets, asciiEscape(canonical), v2);
      if (secretIndex >= 0) scheme = 'v2_ascii';
    }
  }
  let parsed: Parsed | undefined;
  if (!scheme && reparse && simple) {
    parsed = parseObject(text ?? rawBody.toString('utf8'));
    if (!parsed.ok) return parsed;
    secretIndex = matchesAny(secrets, simpleMessage(parsed.body), simple);
    if (secretIndex >= 0) scheme = 'simple';
  }
  if (!scheme) return { ok: false, reason: 'bad_signature' };
  parsed ??= parseObject(text ?? rawBody.toString('utf8'));
  if (!parsed.ok) return parsed;
  const body = parsed.body;

  // Freshness comes from the signed body; the header is not covered by V2 and must merely agree.
  const timestamp = body.timestamp;
  if (typeof timestamp !== 'number' || !Number.isInteger(timestamp)) return { ok: false, reason: 'stale' };
  const headerTs = headers['x-timestamp'];
  if (!input.ignoreFreshness) {
    if (headerTs !== undefined && headerTs !== String(timestamp)) return { ok: false, reason: 'timestamp_mismatch' };
    if (Math.abs(input.nowS - timestamp) > input.toleranceS) return { ok: false, reason: 'stale' };
  }

  return { ok: true, scheme, envelopeOnly: scheme === 'simple', body, timestamp, secretIndex };
}

/**
 * Signs a body with all three schemes, as Didit does (the simulator and the tests). The raw body Didit
 * sends is its ensure_ascii=True form; X-Signature covers those bytes, V2 the unescaped canonical form.
 */
export function signWebhook(rawBody: string, secret: string): Record<string, string> {
  const body = JSON.parse(rawBody) as Record<string, unknown>;
  return {
    'x-timestamp': String(body.timestamp ?? ''),
    'x-signature': hmacHex(secret, Buffer.from(rawBody, 'utf8')),
    'x-signature-v2': hmacHex(secret, canonicalFromText(rawBody)),
    'x-signature-simple': hmacHex(secret, simpleMessage(body)),
  };
}
