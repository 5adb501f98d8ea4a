import { ReadCache } from '../lib/read-cache.js';
import { UAParser } from 'ua-parser-js';
import { LiteralSet } from '../lib/literal-set.js';

/**
 * ua-parser-js 1.x has a ReDoS history: it only ever sees this many characters. Bot detection reads
 * the whole header (up to the decide schema's 8 KiB): a marker padded past this point is still seen.
 */
export const MAX_UA_LENGTH = 512;

export interface UserAgentInfo {
  readonly browser: string;
  readonly os: string;
  readonly deviceType: string;
  readonly bot: boolean;
  /** No usable agent: missing, empty, whitespace only, or a placeholder such as `-`. */
  readonly absent: boolean;
}

export interface UserAgentParser {
  parse(userAgent: string | undefined): UserAgentInfo;
}

/** Something that tells whether a (whole, raw) user agent is a bot. */
export interface BotMatcher {
  test(userAgent: string): boolean;
}

/**
 * Automation that the crawler list does not cover because it is not a crawler. Literals only, so the
 * scan stays linear over 8 KiB.
 */
const AUTOMATION_MARKERS =
  /HeadlessChrome|PhantomJS|puppeteer|playwright|selenium|webdriver|python-requests|python-urllib|aiohttp|Go-http-client|okhttp|curl\/|Wget\/|libwww-perl|node-fetch|axios\/|undici/i;

/** What proxies, logs and broken clients put where there is no agent. */
const PLACEHOLDERS = new Set(['-', '--', 'null', 'undefined', 'none', 'unknown', 'n/a', '(null)', '""', "''"]);

export function isAbsentUserAgent(userAgent: string | undefined): boolean {
  if (userAgent === undefined) return true;
  const trimmed = userAgent.trim();
  return trimmed === '' || (trimmed.length <= 9 && PLACEHOLDERS.has(trimmed.toLowerCase()));
}

/** `\.` → `.`; undefined when the pattern has any regex syntax left. */
function literalOf(pattern: string): string | undefined {
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '\\') {
      const escaped = pattern[++i];
      if (escaped === undefined || /[A-Za-z0-9]/.test(escaped)) return undefined;
      out += escaped;
    } else if ('.^$*+?()[]{}|'.includes(ch)) {
      return undefined;
    } else {
      out += ch;
    }
  }
  return out;
}

/**
 * The crawler-user-agents patterns as three linear matchers over the lowercased agent: plain
 * literals in one Aho–Corasick set (nearly all of them), literals joined by `[\s\S]*` as ordered
 * indexOf searches (as a regex they are quadratic over 8 KiB), and the few real regexes (anchors,
 * character classes) in one small alternation, which V8 compiles natively.
 */
export function compileBotPatterns(patterns: readonly string[]): BotMatcher | undefined {
  const literals: string[] = [];
  const sequences: string[][] = [];
  const regexes: string[] = [];
  for (const pattern of patterns) {
    try {
      new RegExp(pattern);
    } catch {
      continue;
    }
    const literal = literalOf(pattern);
    if (literal !== undefined) {
      literals.push(literal.toLowerCase());
      continue;
    }
    const pieces = pattern.split('[\\s\\S]*').map(literalOf);
    if (pieces.length > 1 && pieces.every((piece): piece is string => piece !== undefined && piece !== ''))
      sequences.push(pieces.map((piece) => piece.toLowerCase()));
    else regexes.push(pattern);
  }
  if (literals.length + sequences.length + regexes.length === 0) return undefined;
  const set = new LiteralSet(literals);
  const rest = regexes.length > 0 ? new RegExp(regexes.map((p) => `(?:${p})`).join('|'), 'i') : undefined;
  return {
    test(userAgent) {
      const lower = userAgent.toLowerCase();
      if (set.foundIn(lower)) return true;
      for (const pieces of sequences) {
        // The first occurrence of each piece, in order: if any ordered occurrence exists, this one does.
        let from = 0;
        let found = true;
        for (const piece of pieces) {
          const at = lower.indexOf(piece, from);
          if (at < 0) {
            found = false;
            break;
          }
          from = at + piece.length;
        }
        if (found) return true;
      }
      return rest?.test(userAgent) ?? false;
    },
  };
}

export function createUserAgentParser(options: { botPattern?: BotMatcher; cacheSize?: number } = {}): UserAgentParser {
  const cache = new ReadCache<string, UserAgentInfo>(options.cacheSize ?? 10_000);
  // Long agents are rare and up to 8 KiB each: a small cache of their own bounds the memory.
  const longCache = new ReadCache<string, UserAgentInfo>(Math.max(1, Math.ceil((options.cacheSize ?? 10_000) / 20)));
  const absent: UserAgentInfo = { browser: '', os: '', deviceType: 'unknown', bot: false, absent: true };
  const isBot = (text: string) => AUTOMATION_MARKERS.test(text) || (options.botPattern?.test(text) ?? false);
  const parseShort = (text: string): UserAgentInfo => {
    const cached = cache.get(text);
    if (cached) return cached;
    const result = new UAParser(text).getResult();
    const info: UserAgentInfo = {
      browser: result.browser.name ?? '',
      os: result.os.name ?? '',
      deviceType: result.device.type ?? 'desktop',
      bot: isBot(text),
      absent: false,
    };
    cache.set(text, info);
    return info;
  };
  return {
    parse(userAgent) {
      if (isAbsentUserAgent(userAgent)) return absent;
      if (userAgent!.length <= MAX_UA_LENGTH) return parseShort(userAgent!);
      const cached = longCache.get(userAgent!);
      if (cached) return cached;
      const head = parseShort(userAgent!.slice(0, MAX_UA_LENGTH));
      // The whole header, not only the tail: a marker may straddle the cut.
      const info = head.bot || !isBot(userAgent!) ? head : { ...head, bot: true };
      longCache.set(userAgent!, info);
      return info;
    },
  };
}
