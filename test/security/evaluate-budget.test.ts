/**
 * Issue #13 §3: untrusted rule work has a budget. While the worst `/v1/evaluate` bodies we can
 * build run (test/security/expensive-rules.ts enumerates them), `/healthz` and a decide keep
 * answering, and each evaluate is refused with 422 RISK_ERR_RULE_TOO_EXPENSIVE within 1 s. The
 * same budget holds for rule files on disk: a bad commit cannot hang a reload.
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { MAX_EVALUATE_RULESET_BYTES } from '../../src/routes/evaluate.js';
import { startTestService } from '../helpers/service.js';
import { expensiveCases, nested } from './expensive-rules.js';

const dir = mkdtempSync(path.join(tmpdir(), 'risk-budget-'));
cpSync('rules', dir, { recursive: true });
const service = await startTestService({ RULES_DIR: dir });
const base = await service.app.listen({ host: '127.0.0.1', port: 0 });
t.teardown(async () => {
  await service.close();
  rmSync(dir, { recursive: true, force: true });
});

const headers = { 'content-type': 'application/json', ...service.auth };
const POLICY =
  'policy:\n  score_bands: [{ min_score: 0, action: SKIP }]\n  cold_start_floor: PASSIVE\n  degraded_floor: PASSIVE\n';
const SMALL = [
  { name: 'policy.yaml', text: POLICY },
  { name: 'ok.yaml', text: 'rules:\n  - { id: tor, description: d, when: "ip.tor", then: { score: 50 } }\n' },
];

async function timed(
  url: string,
  init?: RequestInit,
): Promise<{ ms: number; status: number; body: Record<string, unknown> }> {
  const started = performance.now();
  let response: Response;
  let text: string;
  try {
    response = await fetch(`${base}${url}`, init);
    text = await response.text();
  } catch (error) {
    // A dropped connection is a failure to report, not an exception that hides the figures.
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    return {
      ms: performance.now() - started,
      status: 0,
      body: { code: `network: ${cause?.code ?? cause?.message ?? String(error)}` },
    };
  }
  const ms = performance.now() - started;
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { raw: text.slice(0, 200) };
  }
  return { ms, status: response.status, body };
}

const health = () => timed('/healthz');
let n = 0;
const decide = () =>
  timed('/v1/decide', {
    method: 'POST',
    headers,
    body: JSON.stringify({ user_id: `u${n++ % 50}`, device_id: 'd1', ip: '89.160.20.112' }),
  });
const evaluateBody = (files: unknown) => ({
  method: 'POST',
  headers,
  body: JSON.stringify({ signals: { 'ip.tor': true }, ruleset: { files } }),
});

function pct(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}
const fmt = (values: number[]) =>
  `p50 ${pct(values, 50).toFixed(1)} / p99 ${pct(values, 99).toFixed(1)} / max ${Math.max(...values).toFixed(1)} ms (n=${values.length})`;

/** Alternating health and decide probes until `stop` resolves. */
async function probeUntil(stop: Promise<unknown>): Promise<{ health: number[]; decide: number[]; bad: string[] }> {
  const out = { health: [] as number[], decide: [] as number[], bad: [] as string[] };
  let done = false;
  void stop.finally(() => {
    done = true;
  });
  while (!done) {
    const h = await health();
    out.health.push(h.ms);
    if (h.status !== 200) out.bad.push(`healthz ${h.status}`);
    const d = await decide();
    out.decide.push(d.ms);
    if (d.status !== 200) out.bad.push(`decide ${d.status} ${String(d.body.code)}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return out;
}

t.before(async () => {
  t.ok(await service.sandbox.warm(), 'the rule sandbox and its spare started');
  for (let i = 0; i < 10; i++) await Promise.all([health(), decide(), timed('/v1/evaluate', evaluateBody(SMALL))]);
});

t.test('a supplied ruleset within the budget is evaluated in the sandbox', async (t) => {
  const reply = await timed('/v1/evaluate', evaluateBody(SMALL));
  t.equal(reply.status, 200);
  t.equal(reply.body.score, 50);
  t.same(
    (reply.body.reasons as Array<{ rule: string }>).map((r) => r.rule).filter((r) => r === 'tor'),
    ['tor'],
  );
});

t.test(
  'the worst evaluate bodies: each 422 RISK_ERR_RULE_TOO_EXPENSIVE within 1 s, while health and decide keep answering',
  async (t) => {
    // Quiet baseline, same process, same machine load as the measurement that follows.
    const quiet = { health: [] as number[], decide: [] as number[], evaluate: [] as number[] };
    for (let i = 0; i < 40; i++) {
      quiet.health.push((await health()).ms);
      quiet.decide.push((await decide()).ms);
    }
    for (let i = 0; i < 10; i++) quiet.evaluate.push((await timed('/v1/evaluate', evaluateBody(SMALL))).ms);
    t.comment(`quiet healthz ${fmt(quiet.health)}; decide ${fmt(quiet.decide)}; small evaluate ${fmt(quiet.evaluate)}`);

    const cases = expensiveCases();
    const results: Array<{ label: string; ms: number; status: number; code: unknown }> = [];
    const flood = (async () => {
      for (const c of cases) {
        const reply = await timed('/v1/evaluate', evaluateBody(c.files));
        results.push({ label: `${c.cls}/${c.label}`, ms: reply.ms, status: reply.status, code: reply.body.code });
      }
    })();
    const probes = await probeUntil(flood);
    await flood;

    const evaluateMs = results.map((r) => r.ms);
    t.comment(
      `during ${cases.length} expensive evaluates: healthz ${fmt(probes.health)}; decide ${fmt(probes.decide)}; evaluate ${fmt(evaluateMs)}`,
    );
    const slowest = [...results].sort((a, b) => b.ms - a.ms).slice(0, 3);
    t.comment(`slowest refusals: ${slowest.map((r) => `${r.label} ${r.ms.toFixed(0)} ms`).join(', ')}`);
    for (const r of results)
      t.ok(r.status === 422 && r.code === 'RISK_ERR_RULE_TOO_EXPENSIVE', `${r.label}: ${r.status} ${String(r.code)}`);
    // 1 s as the issue asks, plus what a small evaluate costs on this (shared) machine right now.
    const limit = 1000 + pct(quiet.evaluate, 50);
    t.ok(
      Math.max(...evaluateMs) <= limit,
      `slowest refusal ${Math.max(...evaluateMs).toFixed(0)} ms ≤ ${limit.toFixed(0)} ms`,
    );
    t.same(probes.bad, [], 'every probe answered 200');
    t.ok(probes.health.length >= 10 && probes.decide.length >= 10, 'probes ran throughout');
    // Under 100 ms added to the quiet figure: the budget keeps untrusted work off this event loop.
    t.ok(
      pct(probes.health, 99) <= pct(quiet.health, 99) + 100,
      `healthz p99 ${pct(probes.health, 99).toFixed(1)} ms ≤ quiet p99 + 100`,
    );
    t.ok(
      pct(probes.decide, 99) <= pct(quiet.decide, 99) + 100,
      `decide p99 ${pct(probes.decide, 99).toFixed(1)} ms ≤ quiet p99 + 100`,
    );
  },
);

t.test(
  'a burst of expensive bodies at once: a bounded queue, 422 or 503 with stable codes, never 200 or 500',
  async (t) => {
    const worst = expensiveCases().filter((c) => c.cls === 'regex' || c.cls === 'many-rules');
    const burst = Array.from({ length: 12 }, (_, i) => worst[i % worst.length]!);
    const flood = Promise.all(burst.map((c) => timed('/v1/evaluate', evaluateBody(c.files))));
    const probes = await probeUntil(flood);
    const replies = await flood;
    const codes = replies.map((r) => `${r.status} ${String(r.body.code)}`);
    t.comment(
      `burst of ${burst.length}: ${[...new Set(codes)].map((c) => `${codes.filter((x) => x === c).length}× ${c}`).join(', ')}; healthz ${fmt(probes.health)}; decide ${fmt(probes.decide)}`,
    );
    for (const code of codes) t.match(code, /^(422 RISK_ERR_RULE_TOO_EXPENSIVE|503 RISK_ERR_UNAVAILABLE)$/);
    t.ok(
      codes.some((c) => c.startsWith('503')),
      'the queue is bounded: excess is refused at once',
    );
    t.ok(
      replies.filter((r) => r.status === 503 && /too many/.test(String(r.body.message))).every((r) => r.ms < 1000),
      'a refusal for a full queue is immediate',
    );
    t.same(probes.bad, []);
    t.equal(service.sandbox.pending(), 0, 'nothing left behind');
    const kills = service.logs.filter((line) => /worker stopped and replaced/.test(line)).length;
    t.comment(`workers killed at their deadline so far: ${kills}`);
  },
);

t.test(
  'rule files on disk get the same budget: a bad commit does not hang a reload, the last good ruleset keeps serving',
  async (t) => {
    // The burst above may have had a worker killed; its replacement's start-up is not what we measure.
    t.ok(await service.sandbox.warm(), 'sandbox ready');
    const before = service.rules.current()?.hash;
    t.ok(before);
    for (const c of expensiveCases()
      .filter((x) => ['nesting', 'regex', 'many-rules', 'deep'].includes(x.cls))
      .slice(0, 12)) {
      const attack = c.files.find((f) => f.name === 'attack.yaml')!;
      writeFileSync(path.join(dir, 'attack.yaml'), attack.text);
      const started = performance.now();
      const reload = service.rules.reload();
      const probes = await probeUntil(reload);
      const outcome = await reload;
      const elapsed = performance.now() - started;
      t.notOk(outcome.ok, `${c.cls}/${c.label}: reload refused`);
      t.ok(
        outcome.errors?.some((e) => e.tooExpensive),
        `${c.cls}/${c.label}: ${outcome.errors?.[0]?.reason}`,
      );
      t.equal(service.rules.current()?.hash, before, 'the previous ruleset keeps serving');
      t.same(probes.bad, [], 'decides answered during the reload');
      // The sandbox's check deadline is 5 s; a refusal by shape takes a fraction of that.
      t.ok(elapsed < 5000, `${c.cls}/${c.label}: refused in ${elapsed.toFixed(0)} ms`);
    }
    const refused = await timed('/v1/decide', {
      method: 'POST',
      headers,
      body: JSON.stringify({ user_id: 'x', device_id: 'y', ip: '89.160.20.112' }),
    });
    t.equal(refused.body.ruleset, before);
    t.ok(
      service.logs.some((line) => /ruleset rejected/.test(line) && /too expensive/.test(line)),
      'the refusal is logged with its reason',
    );
    rmSync(path.join(dir, 'attack.yaml'));
    t.ok((await service.rules.reload()).ok, 'a good commit loads again');
  },
);

t.test('the reported probe is refused by its shape, not by its run time', async (t) => {
  const probe = nested(['all'], 8, '[0,1,2,3,4,5,6,7,8,9]');
  t.ok(probe.length < 600, `${probe.length} characters`);
  const reply = await timed(
    '/v1/evaluate',
    evaluateBody([
      { name: 'policy.yaml', text: POLICY },
      {
        name: 'p.yaml',
        text: `rules:\n  - { id: probe, description: d, when: ${JSON.stringify(probe)}, then: { score: 1 } }\n`,
      },
    ]),
  );
  t.equal(reply.status, 422);
  t.match(reply.body.message, /\[probe\].*comprehensions nested 8 deep/);
  t.equal(reply.body.field, 'ruleset');
});

t.test('a supplied ruleset over 64 KiB of files is refused before the sandbox (the API page says so)', async (t) => {
  const padding = { name: 'padding.yaml', text: `# ${'x'.repeat(MAX_EVALUATE_RULESET_BYTES)}\n` };
  const over = await timed('/v1/evaluate', evaluateBody([...SMALL, padding]));
  t.equal(over.status, 400);
  t.match(over.body, { code: 'RISK_ERR_VALIDATION', field: 'ruleset' });
  const split = Array.from({ length: 4 }, (_, i) => ({
    name: `pad-${i}.yaml`,
    text: `# ${'x'.repeat(MAX_EVALUATE_RULESET_BYTES / 4)}\n`,
  }));
  t.equal(
    (await timed('/v1/evaluate', evaluateBody([...SMALL, ...split]))).status,
    400,
    'the total counts, not each file',
  );
});
