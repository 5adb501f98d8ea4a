import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import type { Redis } from 'ioredis';
import t from 'tap';
import { createRedisClient } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { compileFromTexts, readRuleDir } from '../../src/rules-io/load.js';
import { startRedis } from '../helpers/redis.js';
import { CHROME_WINDOWS, startTestService } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

interface Phase {
  name: string;
  rps: number;
  p50: number;
  p99: number;
  /** Replies received: latency figures describe only these, so a phase where requests hang shows here. */
  answered: number;
  non2xx: number;
  errors: number;
  actions: Record<string, number>;
  degraded: number;
}

/** A bounded load on loopback that records every reply's action, degraded flag and ruleset hash. */
/** Addresses in 89.160.20.128/25: located (SE) and in AS29518 by the test databases. */
const knownIp = (i: number) => `89.160.20.${129 + i}`;

async function phase(name: string, url: string, auth: string, seconds: number, seen: string[] = []): Promise<Phase> {
  const actions: Record<string, number> = {};
  let degraded = 0;
  // Fifty returning users, each on its own address, so no user or address trips a velocity rule
  // within a phase.
  const bodies = Array.from({ length: 50 }, (_, i) =>
    JSON.stringify({ user_id: `load-known-${i}`, device_id: 'phone', ip: knownIp(i), user_agent: CHROME_WINDOWS }),
  );
  const result = await autocannon({
    url,
    connections: 8,
    duration: seconds,
    overallRate: 400,
    requests: bodies.map((known) => ({
      method: 'POST' as const,
      path: '/v1/decide',
      headers: { 'content-type': 'application/json', authorization: auth },
      body: known,
      onResponse: (status: number, body: string) => {
        if (status !== 200) return;
        const reply = JSON.parse(body) as { action: string; degraded: string[]; ruleset: string };
        actions[reply.action] = (actions[reply.action] ?? 0) + 1;
        if (reply.degraded.length) degraded += 1;
        seen.push(reply.ruleset);
      },
    })),
  });
  return {
    name,
    rps: Math.round(result.requests.average),
    p50: result.latency.p50,
    p99: result.latency.p99,
    answered: result['2xx'] + result.non2xx,
    non2xx: result.non2xx,
    errors: result.errors,
    actions,
    degraded,
  };
}

t.test('T11/T12: Redis killed, restarted and paused under load', async (t) => {
  const commandTimeoutMs = 100;
  const server = await startRedis();
  const redis = createRedisClient(server.url, commandTimeoutMs) as Redis;
  redis.on('error', () => undefined);
  await new Promise((r) => redis.once('ready', r));
  const service = await startTestService(
    { RATE_LIMIT_USER_PER_MIN: '100000000', LOG_LEVEL: 'silent' },
    { store: createRedisStore({ redis, keyPrefix: 'load:' }), redis },
  );
  await service.app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(async () => {
    await service.close();
    await server.stop();
  });
  const url = `http://127.0.0.1:${(service.app.server.address() as AddressInfo).port}`;
  const seed = async () => {
    for (let i = 0; i < 50; i++)
      await trustDirectly(
        service,
        { user: `load-known-${i}`, device: 'phone', ip: knownIp(i), country: 'SE', asn: 29518 },
        Date.now(),
      );
  };
  await seed();
  const before = await phase('before', url, service.auth.authorization, 3);
  await server.kill();
  const during = await phase('redis killed', url, service.auth.authorization, 3);
  await server.restart();
  const restarted = Date.now();
  let recoveryMs = -1;
  while (Date.now() - restarted < 5000) {
    const reply = await service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { 'content-type': 'application/json', ...service.auth },
      payload: JSON.stringify({ user_id: 'probe', device_id: 'p', ip: '89.160.20.112' }),
    });
    if ((reply.json() as { degraded: string[] }).degraded.length === 0) {
      recoveryMs = Date.now() - restarted;
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await seed();
  const after = await phase('after', url, service.auth.authorization, 3);
  // Paused longer than the phase, so every request of the phase meets a hung Redis.
  server.cli('client', 'pause', '4000', 'ALL');
  const paused = await phase('redis paused', url, service.auth.authorization, 2);
  await new Promise((r) => setTimeout(r, 2200));
  for (const p of [before, during, after, paused]) {
    process.stdout.write(
      `# ${p.name.padEnd(13)} ${p.rps} req/s, ${p.answered} answered, p50 ${p.p50} ms, p99 ${p.p99} ms, non-2xx ${p.non2xx}, socket errors ${p.errors}, actions ${JSON.stringify(p.actions)}, degraded ${p.degraded}\n`,
    );
    t.equal(p.non2xx, 0, `${p.name}: 0 non-2xx`);
    t.equal(p.errors, 0, `${p.name}: 0 socket errors`);
    // 25 req/s at least (a busy machine answered 68/s while Redis was paused): hung requests have no
    // latency, so a phase that answered almost nothing would pass the latency bounds below.
    t.ok(p.answered >= 50, `${p.name}: ${p.answered} replies`);
  }
  process.stdout.write(`# first non-degraded decision ${recoveryMs} ms after Redis accepted connections\n`);
  t.ok((before.actions.SKIP ?? 0) > 0, 'healthy: the known device skips');
  t.equal(during.actions.SKIP ?? 0, 0, '0 SKIP while Redis is down');
  t.equal(paused.actions.SKIP ?? 0, 0, '0 SKIP while Redis is paused');
  t.equal(during.actions.DENY ?? 0, 0, 'the outage alone never denies');
  // Bounds from the healthy phase of this run (the machine's load included): a decide's one store call
  // is capped by the command timeout (100 ms) and, behind it, by the decide's store deadline (250 ms),
  // plus 300 ms for a busy 2-core machine. With neither, requests wait out the 4 s pause and fail
  // this; the command timeout alone is held to its figure in test/store/redis-outage.test.ts.
  const storeDeadlineMs = 250;
  const bound = before.p99 + storeDeadlineMs + 300;
  t.ok(during.p99 <= bound, `outage p99 ${during.p99} ms ≤ ${bound} ms (healthy p99 ${before.p99} ms)`);
  t.ok(
    paused.p99 <= bound,
    `pause p99 ${paused.p99} ms ≤ ${bound} ms (healthy p99 ${before.p99} ms, command timeout ${commandTimeoutMs} ms)`,
  );
  t.ok(recoveryMs >= 0 && recoveryMs <= 2000, `recovered in ${recoveryMs} ms`);
  t.ok((after.actions.SKIP ?? 0) > 0, 'normal service after the restart');
});

t.test('T31: 100 rewrites mixing valid and broken rule files under load never serve a partial ruleset', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'risk-reload-'));
  cpSync('rules', dir, { recursive: true });
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const service = await startTestService(
    { RULES_DIR: dir, RATE_LIMIT_USER_PER_MIN: '100000000', LOG_LEVEL: 'silent' },
    { watch: true },
  );
  await service.app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => service.close());
  const url = `http://127.0.0.1:${(service.app.server.address() as AddressInfo).port}`;
  const file = path.join(dir, 'purpose.yaml');
  const original = readFileSync(file, 'utf8');
  const valid = new Set<string>([service.rules.current()!.hash]);
  const broken = [
    'rules:\n  - id: x\n    when: [\n',
    'rules:\n  - { id: schema-bad, description: d, when: "true", then: { score: "high" } }\n',
    'rules:\n  - { id: redos, description: d, when: \'ua.browser.matches("(a+)+$")\', then: { score: 1 } }\n',
    original.slice(0, Math.floor(original.length / 2)),
    '',
    `# ${'x'.repeat(10 * 1024 * 1024)}\n`,
    'rules:\n  - id: proto\n    description: d\n    when: "true"\n    then: { score: 1 }\n    __proto__: { polluted: true }\n',
  ];
  const seen: string[] = [];
  const load = phase('reload churn', url, service.auth.authorization, 6, seen);
  let rejected = 0;
  for (let i = 0; i < 100; i++) {
    if (i % 2 === 0) {
      const text = original.replace('owner: identity-security', `owner: identity-security-${i}`);
      if (text === original) throw new Error('the valid edit must change purpose.yaml');
      const files = (await readRuleDir(dir)).map((f) => (f.name === 'purpose.yaml' ? { name: f.name, text } : f));
      const compiled = compileFromTexts(files);
      if (compiled.ok) valid.add(compiled.ruleset.hash);
      writeFileSync(file, text);
    } else {
      writeFileSync(file, broken[i % broken.length]!);
      rejected += 1;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  writeFileSync(file, original);
  const churn = await load;
  const outside = seen.filter((h) => !valid.has(h));
  process.stdout.write(
    `# reload churn: ${churn.rps} req/s, ${seen.length} decisions, ${valid.size} valid rulesets seen possible, ${rejected} broken writes, ${outside.length} decisions from an unknown ruleset\n`,
  );
  t.ok(seen.length > 500, `${seen.length} decisions during the churn`);
  t.equal(outside.length, 0, 'every decision came from a fully valid ruleset');
  t.equal(churn.non2xx, 0);
  t.equal(({} as Record<string, unknown>).polluted, undefined);
});
