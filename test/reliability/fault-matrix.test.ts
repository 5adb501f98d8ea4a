import { mkdtempSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Reader } from 'maxmind';
import t from 'tap';
import { KNOWN_LABELS } from '../../src/metrics.js';
import { createMemoryStore } from '../../src/store/memory-store.js';
import type { Store } from '../../src/store/store.js';
import { rank } from '../../src/engine/ladder.js';
import { startDiditStack } from '../helpers/didit.js';
import { CHROME_WINDOWS, testClock, injectDecide } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

/**
 * T10: every input × {ok, down, slow, corrupt} and ten pairwise combinations. Pass: 0 SKIP when an
 * input needed for SKIP is missing, 0 DENY caused only by an outage, every degraded reply names
 * the input, HTTP 200, bounded latency.
 */
const work = mkdtempSync(path.join(tmpdir(), 'risk-faults-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

// Data directories with broken lists: missing manifest, garbage files.
const listsDown = path.join(work, 'lists-down');
cpSync('data', listsDown, { recursive: true });
rmSync(path.join(listsDown, 'lists.json'));
const listsCorrupt = path.join(work, 'lists-corrupt');
cpSync('data', listsCorrupt, { recursive: true });
for (const f of [
  'tor/tor-exit-relays-2026-08-22.lst',
  'vpn-datacenter/x4bnet-vpn-ipv4.txt',
  'vpn-datacenter/x4bnet-vpn-ipv6.txt',
  'vpn-datacenter/x4bnet-datacenter-ipv4.txt',
  'vpn-datacenter/x4bnet-datacenter-ipv6.txt',
  'vpn-datacenter/vpn-provider-inputs/apple.txt',
]) {
  writeFileSync(path.join(listsCorrupt, f), '\u0000\u0001garbage\nnot an address\n');
}
const garbageDb = path.join(work, 'garbage.mmdb');
writeFileSync(garbageDb, Buffer.alloc(4096, 7));

type Mode = 'ok' | 'down' | 'slow' | 'corrupt';
type Input = 'store' | 'geoip' | 'lists' | 'didit';

/**
 * Injected delays are far above every deadline and the latency bound below, so a deadline that
 * stopped working fails the bound instead of passing on luck; the bound itself leaves seconds of
 * room over the deadlines (Didit 300 + 300 ms, store 250 ms) for a busy 2-core machine.
 */
const SLOW_MS = 5000;
const LATENCY_BOUND_MS = 2500;

/** Counts of faults actually injected in the current cell: each cell proves it injected what it names. */
const injected = { store: 0, geoipSlowLookups: 0 };

function faultyStore(mode: Mode): Store {
  const real = createMemoryStore();
  if (mode === 'ok') return real;
  const wrap = { ...real } as Record<string, unknown>;
  for (const name of ['observe', 'recordPending', 'findPending', 'getSession', 'countSessionOpen', 'trust']) {
    const fn = (real as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[name]!;
    wrap[name] =
      mode === 'down'
        ? async () => {
            injected.store += 1;
            throw new Error('Connection is closed.');
          }
        : mode === 'slow'
          ? (...a: unknown[]) => {
              injected.store += 1;
              return new Promise((r) => setTimeout(() => r(fn.apply(real, a)), SLOW_MS));
            }
          : async (...a: unknown[]) => {
              injected.store += 1;
              return name === 'observe' ? { deviceKnown: 'yes', decides1h: NaN } : fn.apply(real, a);
            };
  }
  wrap.trust = real.trust.bind(real);
  return wrap as unknown as Store;
}

/**
 * A slow GeoIP: lookups are synchronous reads of an in-memory tree, so "slow" is a lookup that takes
 * long (a huge database on a cold page cache); every reader in this process is slowed for the cell.
 */
const GEOIP_LOOKUP_DELAY_MS = 40;
function slowGeoIp(): () => void {
  const original = Reader.prototype.get;
  Reader.prototype.get = function (this: Reader<never>, ip: string) {
    injected.geoipSlowLookups += 1;
    const until = performance.now() + GEOIP_LOOKUP_DELAY_MS;
    while (performance.now() < until); // synchronous, like the lookup it stands for
    return original.call(this, ip);
  } as typeof original;
  return () => {
    Reader.prototype.get = original;
  };
}

function env(input: Input, mode: Mode): Record<string, string> {
  if (input === 'geoip' && mode === 'down')
    return { GEOIP_CITY_DB: path.join(work, 'missing-city.mmdb'), GEOIP_ASN_DB: path.join(work, 'missing-asn.mmdb') };
  if (input === 'geoip' && mode === 'corrupt')
    return { GEOIP_CITY_DB: 'data/maxmind-test/GeoIP2-City-Test-Invalid-Node-Count.mmdb', GEOIP_ASN_DB: garbageDb };
  if (input === 'lists' && mode === 'down') return { DATA_DIR: listsDown };
  if (input === 'lists' && mode === 'corrupt') return { DATA_DIR: listsCorrupt };
  if (input === 'lists' && mode === 'slow') return { TOR_LIST_MAX_AGE_HOURS: '48' }; // "slow" for a list is a list that stopped updating: stale
  return {};
}

const cells: Array<Array<[Input, Mode]>> = [];
for (const input of ['store', 'geoip', 'lists', 'didit'] as Input[])
  for (const mode of ['ok', 'down', 'slow', 'corrupt'] as Mode[]) cells.push([[input, mode]]);
const pairs: Array<Array<[Input, Mode]>> = [
  [
    ['store', 'down'],
    ['geoip', 'down'],
  ],
  [
    ['store', 'down'],
    ['lists', 'down'],
  ],
  // A store that fails or hangs stops a step-up before Didit is called, which would hide a Didit
  // fault; a store that answers nonsense lets both faults act.
  [
    ['store', 'corrupt'],
    ['didit', 'slow'],
  ],
  [
    ['store', 'corrupt'],
    ['lists', 'corrupt'],
  ],
  [
    ['geoip', 'corrupt'],
    ['lists', 'down'],
  ],
  [
    ['geoip', 'down'],
    ['didit', 'down'],
  ],
  [
    ['lists', 'slow'],
    ['didit', 'corrupt'],
  ],
  [
    ['lists', 'corrupt'],
    ['didit', 'down'],
  ],
  [
    ['store', 'corrupt'],
    ['didit', 'down'],
  ],
  [
    ['geoip', 'down'],
    ['lists', 'down'],
  ],
];

const report: string[] = [];
for (const faults of [...cells, ...pairs]) {
  const title = faults.map(([i, m]) => `${i}:${m}`).join(' + ');
  t.test(title, async (t) => {
    const clock = testClock();
    const storeMode = faults.find(([i]) => i === 'store')?.[1] ?? 'ok';
    const didit = faults.find(([i]) => i === 'didit')?.[1] ?? 'ok';
    const extraEnv = Object.assign({}, ...faults.map(([i, m]) => env(i, m))) as Record<string, string>;
    const stack = await startDiditStack(
      clock,
      { ...extraEnv, DIDIT_TIMEOUT_MS: '300', RATE_LIMIT_USER_PER_MIN: '100000' },
      undefined,
      faultyStore(storeMode),
    );
    t.teardown(() => stack.close());
    const { service, simulator } = stack;
    simulator.faults =
      didit === 'down'
        ? { status: 503 }
        : didit === 'slow'
          ? { latencyMs: SLOW_MS }
          : didit === 'corrupt'
            ? { malformed: true }
            : {};
    await trustDirectly(
      service,
      { user: 'known', device: 'phone', ip: '89.160.20.112', country: 'SE', asn: 29518 },
      clock(),
    );
    injected.store = 0;
    injected.geoipSlowLookups = 0;
    if (faults.some(([i, m]) => i === 'geoip' && m === 'slow')) t.teardown(slowGeoIp());
    const requests = [
      { user_id: 'known', device_id: 'phone', ip: '89.160.20.112', user_agent: CHROME_WINDOWS },
      { user_id: 'known', device_id: 'new-laptop', ip: '185.220.101.1', user_agent: CHROME_WINDOWS },
      { user_id: 'stranger', device_id: 'x', ip: '2001:218::1' },
    ];
    const outcome: string[] = [];
    const degradedSeen = new Set<string>();
    const verificationReasons = new Set<string>();
    for (const body of requests) {
      const started = Date.now();
      const response = await injectDecide(service, body);
      const ms = Date.now() - started;
      t.equal(response.statusCode, 200, `${title}: HTTP 200`);
      const reply = response.json() as {
        action: string;
        degraded: string[];
        verification: { status: string; reason?: string };
      };
      outcome.push(`${reply.action}${reply.degraded.length ? `[${reply.degraded.join(',')}]` : ''}`);
      for (const input of reply.degraded) degradedSeen.add(input);
      if (reply.verification.reason) verificationReasons.add(reply.verification.reason);
      t.ok(ms < LATENCY_BOUND_MS, `${title}: answered in ${ms} ms`);
      // Didit is not an input of the decision; the store, GeoIP and lists are (a stale list included).
      // A slow GeoIP still answers every lookup: nothing is unknown, so it may skip.
      const skipInputDown = faults.some(([i, m]) => m !== 'ok' && i !== 'didit' && !(i === 'geoip' && m === 'slow'));
      if (skipInputDown) {
        t.not(reply.action, 'SKIP', `${title}: no SKIP with an input needed for SKIP missing`);
        t.ok(reply.degraded.length > 0, `${title}: degraded names the input (${reply.degraded.join(',')})`);
      }
      t.not(reply.action, 'DENY', `${title}: an outage alone never denies`);
      if (didit !== 'ok' && rank(reply.action as never) > 0 && rank(reply.action as never) < 4)
        t.equal(reply.verification.status, 'unavailable', `${title}: Didit fault is visible`);
    }
    // Each named fault was really injected, and seen where it should show.
    const diditOutcomes = await service.metrics.registry.getSingleMetricAsString('risk_didit_requests_total');
    for (const [input, mode] of faults) {
      const cell = `${input}:${mode}`;
      if (mode === 'ok') t.notOk(degradedSeen.has(input), `${cell}: not degraded`);
      else if (input === 'store') {
        t.ok(injected.store > 0, `${cell}: ${injected.store} store calls faulted`);
        t.ok(degradedSeen.has('store'), `${cell}: degraded names store`);
      } else if (input === 'geoip' && mode === 'slow') {
        t.ok(
          injected.geoipSlowLookups >= requests.length,
          `${cell}: ${injected.geoipSlowLookups} lookups slowed by ${GEOIP_LOOKUP_DELAY_MS} ms`,
        );
        t.notOk(degradedSeen.has('geoip'), `${cell}: slow is not down: every lookup answered`);
      } else if (input === 'geoip' || input === 'lists')
        t.ok(degradedSeen.has(input), `${cell}: degraded names ${input}`);
      else {
        const [reason, outcomeLabel] =
          mode === 'down'
            ? ['didit_server', 'server']
            : mode === 'slow'
              ? ['didit_timeout', 'timeout']
              : ['didit_bad_response', 'bad_response'];
        t.ok(
          verificationReasons.has(reason),
          `${cell}: a reply says ${reason} (${[...verificationReasons].join(', ')})`,
        );
        t.match(
          diditOutcomes,
          new RegExp(`outcome="${outcomeLabel}"} [1-9]`),
          `${cell}: risk_didit_requests_total{outcome="${outcomeLabel}"} counted it`,
        );
      }
    }
    for (const input of degradedSeen)
      t.ok(
        (KNOWN_LABELS.degradedInput as readonly string[]).includes(input),
        `degraded input ${input} has a pre-initialised series`,
      );
    if (faults.every(([, m]) => m === 'ok')) t.equal(outcome[0], 'SKIP', 'healthy: the known device skips');
    report.push(`${title.padEnd(32)} ${outcome.join('  ')}`);
  });
}

t.teardown(() => {
  process.stdout.write(
    `\n# T10 fault matrix (known device, Tor + new device, stranger):\n${report.map((r) => `#   ${r}`).join('\n')}\n`,
  );
});
