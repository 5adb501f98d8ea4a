import { readdirSync, readFileSync } from 'node:fs';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { loadSignalSources } from '../../src/data-io/load-sources.js';
import { localIpVelocity } from '../../src/signals/ip-velocity.js';
import { createEnricher } from '../../src/signals/enrich.js';
import { createMemoryStore } from '../../src/store/memory-store.js';
import { createMemoryDecisionRecords, MEMORY_RECORDS_MAX } from '../../src/store/decision-records-memory.js';
import { encodeRecord } from '../../src/store/decision-records.js';
import { stepUpRecord } from '../helpers/decision-record.js';
import { createPseudonymiser } from '../../src/store/pseudonymise.js';
import { evaluate } from '../../src/engine/evaluate.js';
import type { CompiledRuleset } from '../../src/engine/ruleset.js';
import type { Signals } from '../../src/engine/signals.js';
import { compileFromTexts } from '../../src/rules-io/load.js';

const SIGNALS: Signals = {
  'request.purpose': 'login',
  'request.attributes': {},
  'device.known': true,
  'device.seen_count': 12,
  'ip.known': true,
  'ip.prefix_known': true,
  'ip.tor': false,
  'ip.vpn': false,
  'ip.hosting': false,
  'ip.relay': false,
  'ip.asn': 29518,
  'geo.country': 'SE',
  'geo.country_known': true,
  'geo.travel_assessed': false,
  'ua.bot': false,
  'ua.changed': false,
  'ua.browser': 'Chrome',
  'ua.os': 'Windows',
  'user.verified_count': 2,
  'velocity.decides_1h': 1,
  'velocity.distinct_ips_1h': 1,
  'velocity.declines_24h': 0,
  'velocity.declines_device_24h': 0,
  'velocity.declines_elsewhere_24h': 0,
  'velocity.ip_decides_1m': 1,
  'ip.version': 4,
  'ip.private': false,
};

function time(ruleset: CompiledRuleset, iterations = 50_000): number {
  for (let i = 0; i < 5000; i++) evaluate(ruleset, { signals: SIGNALS, now: 0 });
  const started = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) evaluate(ruleset, { signals: SIGNALS, now: 0 });
  return Math.round(Number(process.hrtime.bigint() - started) / iterations / 10) / 100;
}

/** evaluate() for the shipped ruleset and for 30 rules of the same shape (µs per call). */
export async function microBenchmarks(): Promise<Record<string, number>> {
  const shipped = compileFromTexts(
    readdirSync('rules')
      .filter((n) => /\.ya?ml$/.test(n))
      .map((name) => ({ name, text: readFileSync(`rules/${name}`, 'utf8') })),
  );
  if (!shipped.ok) throw new Error('shipped rules do not compile');
  const thirty = Array.from({ length: 30 }, (_, i) => {
    const conditions = [
      '!device.known && ip.tor',
      'ip.hosting && !ip.relay && !device.known',
      'velocity.declines_24h >= 2',
      `velocity.decides_1h > ${20 + i}`,
      'geo.country != "" && !geo.country_known',
      'ua.bot',
      'request.purpose in ["change_password", "add_payee"]',
    ];
    return `  - { id: r${i}, description: d, when: '${conditions[i % conditions.length]}', then: { score: 1 } }`;
  }).join('\n');
  const policy = readFileSync('rules/policy.yaml', 'utf8');
  const many = compileFromTexts([
    { name: 'policy.yaml', text: policy },
    { name: 'many.yaml', text: `rules:\n${thirty}\n` },
  ]);
  if (!many.ok) throw new Error('30 rules do not compile');
  return {
    evaluate_shipped_rules: time(shipped.ruleset),
    evaluate_30_rules: time(many.ruleset),
    enrich_without_store: await enrichment(),
    memory_record_put_at_cap: await recordAtCap(),
  };
}

/** GeoIP (City + ASN + Anonymous + Connection-Type), lists, UA from a warm cache, five HMAC pseudonyms. */
async function enrichment(iterations = 50_000): Promise<number> {
  const config = loadConfig({ LOG_LEVEL: 'silent' });
  const sources = await loadSignalSources(config.data, createLogger('silent'));
  const store = createMemoryStore();
  const history = await store.peek({ user: 'u', device: 'd', ip: 'i', prefix: 'p' }, 0);
  const enrich = createEnricher({
    ...sources,
    store: { ...store, observe: async () => history },
    ids: createPseudonymiser({ kid: 'm', secret: 'micro-benchmark-secret-0123456789' }),
    ipVelocity: localIpVelocity(),
  });
  const request = {
    userId: 'bench-user',
    deviceId: 'bench-device',
    ip: '89.160.20.112',
    purpose: 'login',
    userAgent:
      'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36',
  };
  for (let i = 0; i < 5000; i++) await enrich(request, 0);
  const started = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) await enrich(request, 0);
  return Math.round(Number(process.hrtime.bigint() - started) / iterations / 10) / 100;
}

/** One decision record into the embedded store at its cap (each put evicts the oldest), µs per record. */
async function recordAtCap(iterations = 100_000): Promise<number> {
  const records = createMemoryDecisionRecords({ ttlMs: 86_400_000 });
  const encoded = (i: number) =>
    encodeRecord(stepUpRecord(`d${i}`, '', i, { action: 'SKIP', stepUp: undefined, signals: SIGNALS }));
  const made = Array.from({ length: MEMORY_RECORDS_MAX + iterations }, (_, i) => encoded(i));
  for (let i = 0; i < MEMORY_RECORDS_MAX; i++) await records.putMany([made[i]!], i);
  const started = process.hrtime.bigint();
  for (let i = MEMORY_RECORDS_MAX; i < made.length; i++) await records.putMany([made[i]!], i);
  return Math.round(Number(process.hrtime.bigint() - started) / iterations / 10) / 100;
}
