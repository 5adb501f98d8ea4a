import { readFile } from 'node:fs/promises';
import t from 'tap';
import { checkSync } from 'recheck';
import { compileBotPatterns, createUserAgentParser, MAX_UA_LENGTH } from '../../src/signals/user-agent.js';

// recheck's in-thread backend, as the service runs it (src/rules-io/regex-guard.ts): its native agent
// sometimes stopped answering after a timed-out check, and the caller then waited forever.
process.env.RECHECK_SYNC_BACKEND = 'pure';

const crawlers = JSON.parse(await readFile('data/user-agents/bots/crawler-user-agents.json', 'utf8')) as Array<{
  pattern: string;
  instances: string[];
}>;
const parser = createUserAgentParser({ botPattern: compileBotPatterns(crawlers.map((c) => c.pattern)) });

t.test('ua-parser-js 1.x fixtures parse as expected (browser and os names)', async (t) => {
  const browsers = JSON.parse(
    await readFile('data/user-agents/ua-parser-js-1.0.41/browser-test.json', 'utf8'),
  ) as Array<{ ua: string; expect: { name: string } }>;
  let checked = 0;
  for (const c of browsers) {
    if (c.ua.length > MAX_UA_LENGTH) continue;
    const expected = c.expect.name === 'undefined' ? '' : c.expect.name;
    t.equal(parser.parse(c.ua).browser, expected, c.ua.slice(0, 80));
    checked += 1;
  }
  t.ok(checked > 200);
});

t.test('every crawler example is flagged as a bot', async (t) => {
  let total = 0;
  let missed: string[] = [];
  for (const c of crawlers)
    for (const ua of c.instances) {
      total += 1;
      if (!parser.parse(ua).bot) missed.push(ua);
    }
  missed = missed.filter((ua) => ua.length <= MAX_UA_LENGTH);
  t.same(missed, [], `${total} examples`);
});

t.test('mainstream browsers are not flagged', async (t) => {
  const uap = JSON.parse(await readFile('data/user-agents/uap-core/test_ua.json', 'utf8')) as {
    test_cases: Array<{ user_agent_string: string; family: string }>;
  };
  const mainstream = new Set([
    'Chrome',
    'Firefox',
    'Safari',
    'Mobile Safari',
    'Chrome Mobile',
    'Edge',
    'Opera',
    'Samsung Internet',
    'Firefox Mobile',
    'Chrome Mobile iOS',
  ]);
  const own = JSON.parse(await readFile('data/user-agents/ua-parser-js-1.0.41/browser-test.json', 'utf8')) as Array<{
    ua: string;
    expect: { name: string };
  }>;
  const ownNames = new Set([
    'Chrome',
    'Firefox',
    'Safari',
    'Mobile Safari',
    'Edge',
    'Opera',
    'Samsung Browser',
    'Chrome WebView',
    'Brave',
    'Vivaldi',
    'Yandex',
  ]);
  // uap-core files Google's "Web Preview" fetcher under Chrome; it is a crawler and is flagged on purpose.
  const agents = [
    ...uap.test_cases.filter((c) => mainstream.has(c.family)).map((c) => c.user_agent_string),
    ...own.filter((c) => ownNames.has(c.expect.name)).map((c) => c.ua),
  ].filter((ua) => !ua.includes('Google Web Preview'));
  t.ok(agents.length >= 75, `${agents.length} mainstream browser agents`);
  t.same(
    agents.filter((ua) => parser.parse(ua).bot),
    [],
  );
  t.equal(
    parser.parse(
      'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko; Google Web Preview) Chrome/27.0.1453 Safari/537.36.',
    ).bot,
    true,
  );
});

t.test('headless and scripted clients are flagged', async (t) => {
  for (const ua of [
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36',
    'python-requests/2.31.0',
    'curl/8.4.0',
    'Go-http-client/1.1',
  ]) {
    t.equal(parser.parse(ua).bot, true, ua);
  }
});

t.test('no crawler pattern can backtrack catastrophically (recheck)', async (t) => {
  let checked = 0;
  for (const { pattern } of crawlers) {
    if (!/[*+?{]/.test(pattern)) continue;
    const result = checkSync(pattern, 'i');
    checked += 1;
    // "unknown" is recheck giving up (timeout or unsupported syntax): not a verdict, so a failure.
    t.ok(
      result.status === 'safe' || result.status === 'vulnerable',
      `${pattern}: recheck reached a verdict (${result.status})`,
    );
    // Polynomial (degree 2) over at most 512 characters is bounded; exponential never is.
    const complexity = (result as { complexity?: { type: string; degree?: number } }).complexity;
    t.not(complexity?.type, 'exponential', pattern);
    if (result.status === 'vulnerable') t.ok((complexity?.degree ?? 99) <= 2, `${pattern}: at most quadratic`);
  }
  t.ok(checked >= 5, `${checked} patterns with quantifiers checked`);
});

// No timing here: ua-parser-js cuts at 500 characters itself, so a time bound on a long agent passed
// with our cut removed (and an absolute bound fails on a busy machine instead).
t.test('a long user agent parses as its head and is cached', async (t) => {
  const head =
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 ';
  const long = `${head}${'(a;'.repeat(3000)} Firefox/121.0`;
  const info = parser.parse(long);
  t.match(info, { browser: 'Chrome', os: 'Windows' }, 'the head decides, not the tail');
  t.same(info, parser.parse(long.slice(0, MAX_UA_LENGTH)), 'as its first MAX_UA_LENGTH characters parse');
  t.equal(parser.parse(long), info, 'the second parse is the cached object');
  t.same(parser.parse(undefined), { browser: '', os: '', deviceType: 'unknown', bot: false, absent: true });
});
