import { isIP } from 'node:net';

/**
 * Where a step-up may send the browser back to. The callback travels to Didit and comes back as a
 * redirect in the user's browser, so a loose rule is an open redirect on an authentication flow
 * (phishing), a script URL (`javascript:`), or a pointer at internal hosts (metadata services).
 */
export interface CallbackPolicy {
  /** Exact origins (`https://app.example.com`); when set, nothing else is accepted. */
  readonly allowedOrigins?: ReadonlySet<string>;
  /** Embedded mode (the simulator runs on loopback): `http:` to a loopback host is accepted too. */
  readonly allowLoopbackHttp: boolean;
}

export const MAX_CALLBACK_LENGTH = 2048;

/**
 * Only printable ASCII: whitespace and control characters are stripped or reinterpreted by URL
 * parsers (the WHATWG parser drops tabs and newlines anywhere), a backslash is read as `/` by
 * browsers for http(s), and raw Unicode hosts are the homograph vector: a caller sends punycode,
 * so what is checked is what the browser will show.
 */
const PRINTABLE_ASCII = /^[\x21-\x7e]+$/;

function isLoopbackHost(hostname: string): boolean {
  if (hostname === 'localhost' || hostname.endsWith('.localhost')) return true;
  if (hostname === '[::1]') return true;
  return isIP(hostname) === 4 && hostname.startsWith('127.');
}

/**
 * Why `raw` is not an acceptable callback, or undefined when it is. The reason never echoes the URL
 * (it goes into a 400 body and into logs).
 */
export function callbackProblem(raw: string, policy: CallbackPolicy): string | undefined {
  if (raw.length === 0 || raw.length > MAX_CALLBACK_LENGTH)
    return `callback must be 1 to ${MAX_CALLBACK_LENGTH} characters`;
  if (!PRINTABLE_ASCII.test(raw)) return 'callback must be printable ASCII without spaces (send IDN hosts as punycode)';
  if (raw.includes('\\')) return 'callback must not contain a backslash';
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'callback is not an absolute URL';
  }
  if (url.username !== '' || url.password !== '') return 'callback must not carry user information (user@host)';
  const loopback = isLoopbackHost(url.hostname);
  if (url.protocol === 'http:') {
    if (!(policy.allowLoopbackHttp && loopback))
      return 'callback must be https (http only to loopback with the embedded simulator)';
  } else if (url.protocol !== 'https:') {
    return 'callback must be https';
  }
  // The parser has already turned decimal, octal and hex spellings into a dotted quad.
  if (!loopback && (isIP(url.hostname) !== 0 || url.hostname.startsWith('[')))
    return 'callback host must be a DNS name, not an IP address';
  if (loopback && !policy.allowLoopbackHttp) return 'callback must not point at loopback';
  if (policy.allowedOrigins) {
    return policy.allowedOrigins.has(url.origin) ? undefined : 'callback origin is not in CALLBACK_ALLOWED_ORIGINS';
  }
  if (loopback) return undefined;
  if (!url.hostname.includes('.') || url.hostname.endsWith('.'))
    return 'callback host must be a fully qualified DNS name';
  // Homograph look-alikes: punycode hosts are accepted only when listed in CALLBACK_ALLOWED_ORIGINS.
  if (url.hostname.split('.').some((label) => label.startsWith('xn--')))
    return 'callback IDN hosts must be listed in CALLBACK_ALLOWED_ORIGINS';
  if (url.port !== '')
    return 'callback must use the default https port unless its origin is listed in CALLBACK_ALLOWED_ORIGINS';
  return undefined;
}

/**
 * `CALLBACK_ALLOWED_ORIGINS` → a set of origins, or the problems with it. Each entry must be an
 * origin exactly as a browser serialises it (scheme, lowercase host, non-default port; no path),
 * and must itself pass the callback rule.
 */
export function parseAllowedOrigins(
  text: string,
  allowLoopbackHttp: boolean,
): { origins: ReadonlySet<string> } | { problems: string[] } {
  const problems: string[] = [];
  const origins = new Set<string>();
  const entries = text.split(',').map((s) => s.trim());
  entries.forEach((entry, index) => {
    const where = `entry ${index + 1}`;
    let origin: string | undefined;
    try {
      origin = new URL(entry).origin;
    } catch {
      origin = undefined;
    }
    if (origin === undefined || origin === 'null' || origin !== entry) {
      problems.push(
        `${where}: expected an origin such as https://app.example.com (scheme and host, no path or trailing slash)`,
      );
      return;
    }
    // Listing an origin is the operator's decision on IDN hosts and ports; scheme, user info and
    // IP-literal hosts are still refused.
    const problem = callbackProblem(entry, { allowLoopbackHttp, allowedOrigins: new Set([entry]) });
    if (problem) {
      problems.push(`${where}: ${problem}`);
      return;
    }
    origins.add(entry);
  });
  return problems.length > 0 ? { problems } : { origins };
}
