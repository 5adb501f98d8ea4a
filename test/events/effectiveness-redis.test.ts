import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import t from 'tap';
import { main } from '../../src/cli.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { createRedisDecisionRecords } from '../../src/store/decision-records-redis.js';
import { createRedisClient } from '../../src/store/redis-client.js';
import { createEffectiveness } from '../../src/events/effectiveness.js';
import { startDiditStack } from '../helpers/didit.js';
import { startRedis } from '../helpers/redis.js';
import { TEST_HASH_KEY, testClock } from '../helpers/service.js';
import { candidateRules, runScenario, scenarioRules } from './effectiveness-scenario.js';

const own = process.env.REDIS_URL ? undefined : await startRedis();
const url = process.env.REDIS_URL ?? own!.url;
const prefix = `test-${randomBytes(4).toString('hex')}:`;
const redis = createRedisClient(url, 2000) as Redis;
await new Promise((r) => redis.once('ready', r));
const clock = testClock();
const rulesDir = scenarioRules();
const stack = await startDiditStack(
  clock,
  { DIDIT_TIMEOUT_MS: '5000', RULES_DIR: rulesDir, REDIS_KEY_PREFIX: prefix },
  undefined,
  createRedisStore({ redis, keyPrefix: prefix }),
  { redis },
);
t.teardown(async () => {
  await stack.close();
  const cleaner = new Redis(url);
  const keys = await cleaner.keys(`${prefix}*`);
  if (keys.length) await cleaner.del(...keys);
  await cleaner.quit();
  redis.disconnect();
  await own?.stop();
});

/** The CLI as an operator runs it, against the service's Redis. */
async function cli(args: string[]): Promise<{ code: number; text: string }> {
  const saved = { ...process.env };
  Object.assign(process.env, {
    REDIS_URL: url,
    REDIS_KEY_PREFIX: prefix,
    RULES_DIR: rulesDir,
    ID_HASH_KEY: TEST_HASH_KEY,
  });
  const lines: string[] = [];
  try {
    const code = await main(args, (line = '') => lines.push(line));
    return { code, text: lines.join('\n') };
  } finally {
    for (const key of ['REDIS_URL', 'REDIS_KEY_PREFIX', 'RULES_DIR', 'ID_HASH_KEY'])
      if (saved[key] === undefined) delete process.env[key];
    Object.assign(process.env, saved);
  }
}

t.test('redis: outcomes, labels, the report and the labelled replay match the hand-computed figures', async (t) => {
  const { ids } = await runScenario(t, stack, clock);

  // The report command reads the same records from Redis, read-only.
  const keysBefore = (await redis.keys(`${prefix}*`)).sort();
  const dump = async () =>
    Promise.all(keysBefore.filter((k) => k.includes('{dr:')).map(async (k) => [k, await redis.dump(k)]));
  const contentBefore = await dump();
  const json = await cli(['report', '--since', '30d', '--json']);
  t.equal(json.code, 0, json.text.slice(0, 300));
  const report = JSON.parse(json.text) as {
    decisions: number;
    stepUps: number;
    rules: Array<{ rule: string; fired: number; stepUps: number; precisionDeclines: number | null }>;
    dead: string[];
    noisy: string[];
  };
  t.match(report, { decisions: 9, stepUps: 6, dead: ['never-fires'], noisy: ['noisy-flag'] });
  t.match(
    report.rules.find((r) => r.rule === 'risky-flag'),
    { fired: 5, stepUps: 4, precisionDeclines: 1 / 3 },
  );
  const text = await cli(['report']);
  t.comment(`npm run rules -- report\n${text.text}`);
  t.match(
    text.text,
    /risky-flag\s+5\s+4\s+50\.0%\s+25\.0%\s+25\.0%\s+0\.0%\s+0\.0%\s+1\s+1\s+50\.0%\s+33\.3%/,
    'the table row of risky-flag',
  );
  t.match(text.text, /dead \(never fired\): never-fires/);
  t.same((await redis.keys(`${prefix}*`)).sort(), keysBefore, 'the report wrote no key');
  t.same(await dump(), contentBefore, 'and changed none');

  // The labelled replay from the store.
  const replayed = await cli(['replay', '--log', 'store', '--rules', candidateRules(), '--labels', 'store', '--json']);
  t.equal(replayed.code, 0, replayed.text.slice(0, 300));
  t.match(JSON.parse(replayed.text), {
    decisions: 9,
    labelled: {
      fraud: { total: 3, stillChallenged: 3, nowLetThrough: 0 },
      legitimate: { total: 2, nowLetThrough: 1, newlyChallenged: 0 },
    },
  });
  t.ok(ids.A);

  // Every key the records wrote expires (DECISION_RECORD_TTL_DAYS), so Redis memory is bounded by the retention.
  const withoutTtl: string[] = [];
  for (const key of await redis.keys(`${prefix}{dr:*`)) if ((await redis.pttl(key)) < 0) withoutTtl.push(key);
  t.same(withoutTtl, [], 'every decision-record key has a TTL');
  const recordKeys = await redis.keys(`${prefix}{dr:*:r:*`);
  const usage = await Promise.all(recordKeys.map(async (k) => Number(await redis.call('MEMORY', 'USAGE', k))));
  t.comment(
    `Redis MEMORY USAGE per decision record: mean ${Math.round(usage.reduce((a, b) => a + b, 0) / usage.length)} bytes over ${usage.length} records`,
  );
  const ttl = await redis.pttl((await redis.keys(`${prefix}{dr:*:r:*`))[0]!);
  t.ok(ttl > 89 * 86_400_000 && ttl <= 90 * 86_400_000, `a record lives DECISION_RECORD_TTL_DAYS (${ttl} ms)`);
});

t.test('redis: replicas sweeping at once abandon a lapsed step-up exactly once', async (t) => {
  const counted: string[] = [];
  const replica = (n: number) => {
    const connection = createRedisClient(url, 2000) as Redis;
    const records = createRedisDecisionRecords({ redis: connection, keyPrefix: `${prefix}race:`, ttlMs: 86_400_000 });
    const effect = createEffectiveness({
      records,
      counters: {
        outcome: (rule, _m, outcome) => counted.push(`${n}:${rule}:${outcome}`),
        feedback: () => undefined,
        failed: () => undefined,
      },
      ruleLabel: (rule) => rule,
      pendingTtlMs: 60_000,
      clock: () => 1_000_000,
      log: { warn: () => undefined },
    });
    return { connection, effect };
  };
  const replicas = [replica(1), replica(2), replica(3), replica(4)];
  t.teardown(() => {
    for (const r of replicas) r.connection.disconnect();
  });
  await Promise.all(replicas.map((r) => new Promise((ok) => r.connection.once('ready', ok))));
  const stepUps = 60;
  for (let i = 0; i < stepUps; i++) {
    replicas[i % 4]!.effect.decided({
      decisionId: `race-${i}`,
      reqId: `req-${i}`,
      purpose: 'login',
      verification: 'created',
      seconds: 0.001,
      enriched: { user: `u${i}`, device: 'd', signals: {} },
      decision: { action: 'PASSIVE', score: 0, reasons: [{ rule: 'r' }], shadow: [], ruleset: 'h', degraded: [] },
      stepUp: { sessionId: `s-${i}`, method: 'PASSIVE' },
    });
  }
  await Promise.all(replicas.map((r) => r.effect.flush()));
  const settled = await Promise.all(replicas.map((r) => r.effect.sweep(1_000_000 + 60_000, 7)));
  t.equal(
    settled.reduce((a, b) => a + b, 0),
    stepUps,
    `${settled.join(' + ')} = every lapsed step-up once`,
  );
  t.equal(counted.length, stepUps, 'counted once each, whichever replica claimed it');
  t.equal(
    (await Promise.all(replicas.map((r) => r.effect.sweep(1_000_000 + 120_000)))).reduce((a, b) => a + b, 0),
    0,
    'a later sweep finds nothing',
  );
  t.equal(await redis.zcard(`${prefix}race:{dr:0}:open`), 0, 'the open index is empty');
});
