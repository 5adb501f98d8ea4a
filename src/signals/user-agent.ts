import { ReadCache } from '../lib/read-cache.js';
import { UAParser } from 'ua-parser-js';

/** ua-parser-js 1.x has a ReDoS history; nothing past this length is ever parsed. */
export const MAX_UA_LENGTH = 512;

export interface UserAgentInfo {
  readonly browser: string;
  readonly os: string;
  readonly deviceType: string;
  readonly bot: boolean;
}

export interface UserAgentParser {
  parse(userAgent: string | undefined): UserAgentInfo;
}

/** Automation that the crawler list does not cover because it is not a crawler. */
const AUTOMATION_MARKERS = /HeadlessChrome|PhantomJS|Electron\/[\d.]+ .*HeadlessChrome|puppeteer|playwright|selenium|webdriver|python-requests|python-urllib|aiohttp|Go-http-client|okhttp|curl\/|Wget\/|libwww-perl|node-fetch|axios\/|undici/i;

/**
 * One combined alternation of the crawler-user-agents patterns. Every pattern is a literal or a
 * literal joined by `[\s\S]*` (test/signals/user-agent.test.ts checks them with recheck), so the
 * union cannot backtrack catastrophically.
 */
export function compileBotPatterns(patterns: readonly string[]): RegExp | undefined {
  const valid = patterns.filter((p) => {
    try {
      new RegExp(p);
      return true;
    } catch {
      return false;
    }
  });
  return valid.length ? new RegExp(valid.map((p) => `(?:${p})`).join('|'), 'i') : undefined;
}

export function createUserAgentParser(options: { botPattern?: RegExp; cacheSize?: number } = {}): UserAgentParser {
  const cache = new ReadCache<string, UserAgentInfo>(options.cacheSize ?? 10_000);
  const empty: UserAgentInfo = { browser: '', os: '', deviceType: 'unknown', bot: false };
  return {
    parse(userAgent) {
      if (!userAgent) return empty;
      const text = userAgent.length > MAX_UA_LENGTH ? userAgent.slice(0, MAX_UA_LENGTH) : userAgent;
      const cached = cache.get(text);
      if (cached) return cached;
      const result = new UAParser(text).getResult();
      const info: UserAgentInfo = {
        browser: result.browser.name ?? '',
        os: result.os.name ?? '',
        deviceType: result.device.type ?? 'desktop',
        bot: AUTOMATION_MARKERS.test(text) || (options.botPattern?.test(text) ?? false),
      };
      cache.set(text, info);
      return info;
    },
  };
}
