/**
 * Where a decide's CPU goes, stage by stage (issue #19): patches the bench's compiled decide route
 * (`dist/bench/src/routes/decide.js`, written by `npx tsc -p test/bench/tsconfig.json`) so that
 * CUT=<point> in the server's environment answers a canned 1.4 KB reply at that point:
 *   h     on entering the handler (the hooks and fastify's parse only)
 *   v     after validation and the ruleset check
 *   e     after `enrich` (the store's round trip included)
 *   x     after `evaluate()` and its counters
 *   j     the whole decide without `decisions.decided(...)` (no journal line, record or events)
 * and no CUT (or any other value) is the whole decide. The probe passes its environment on:
 * `CUT=e PROBE_RATE=2500 npx tsx test/bench/probe.ts redis 10`. Only the bench's build is patched,
 * never `dist/src` (what `npm start` runs); the next `npm run bench` compiles it afresh. Every
 * anchor must be found exactly once, or nothing is written.
 */
import { readFileSync, writeFileSync } from 'node:fs';

const FILE = 'dist/bench/src/routes/decide.js';
const MARK = '/* stage-cuts */';
const answer = (point: string) =>
  `\n        if (__CUT === '${point}') return reply.type('application/json; charset=utf-8').send(__CANNED);`;

let code = readFileSync(FILE, 'utf8');
if (code.includes(MARK)) {
  process.stdout.write(`${FILE} is already patched\n`);
  process.exit(0);
}
const once = (anchor: string, replacement: string) => {
  const at = code.indexOf(anchor);
  if (at < 0 || code.indexOf(anchor, at + 1) >= 0) throw new Error(`stage-cuts: anchor not found once: ${anchor}`);
  code = code.slice(0, at) + replacement + code.slice(at + anchor.length);
};
once(
  'export function registerDecide',
  `${MARK} const __CUT = process.env.CUT ?? ''; const __CANNED = JSON.stringify({ pad: 'x'.repeat(1400) });\nexport function registerDecide`,
);
once('const started = process.hrtime.bigint();', `const started = process.hrtime.bigint();${answer('h')}`);
const unavailable = "throw new RiskError('RISK_ERR_UNAVAILABLE', 'no ruleset is loaded');";
once(unavailable, `${unavailable}${answer('v')}`);
const rateLimited = "throw new RiskError('RISK_ERR_RATE_LIMITED', 'rate limit exceeded for this user');\n        }";
once(rateLimited, `${rateLimited}${answer('e')}`);
once("stage('evaluate', evaluateStarted);", `stage('evaluate', evaluateStarted);${answer('x')}`);
once('deps.decisions.decided({', "if (__CUT !== 'j') deps.decisions.decided({");
writeFileSync(FILE, code);
process.stdout.write(`${FILE} patched: CUT=h|v|e|x|j\n`);
