/**
 * What a rotation costs a decide: the same returning users decided in process on a real Redis, by a
 * service on one key and by one in a rotation (every decide also runs the migration script, which
 * finds nothing left to move after the first). Run: npx tsx test/bench/rotation-cost.ts
 */
import type { Redis } from 'ioredis';
import { createRedisClient } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { startRedis } from '../helpers/redis.js';
import { CHROME_WINDOWS, startTestService } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

const server = await startRedis();
const KEY = 'n2:new-rotation-hash-key-fedcba9876543210';
const USERS = 200;
const ROUNDS = 5;
async function service(env: Record<string, string>, prefix: string) {
  const redis = createRedisClient(server.url, 500) as Redis;
  await new Promise((r) => redis.once('ready', r));
  const s = await startTestService(
    { ID_HASH_KEY: KEY, ...env },
    { store: createRedisStore({ redis, keyPrefix: prefix }), redis },
  );
  for (let i = 0; i < USERS; i++)
    await trustDirectly(s, { user: `u${i}`, device: 'home', ip: `81.2.69.${i % 250}` }, Date.now());
  return s;
}
async function decideTimed(s: Awaited<ReturnType<typeof service>>, i: number): Promise<number> {
  const started = process.hrtime.bigint();
  const reply = await s.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...s.auth },
    payload: { user_id: `u${i}`, device_id: 'home', ip: `81.2.69.${i % 250}`, user_agent: CHROME_WINDOWS },
  });
  if (reply.json().action !== 'SKIP') throw new Error(`not SKIP: ${reply.body}`);
  return Number(process.hrtime.bigint() - started) / 1e6;
}
// Interleaved decide by decide, so both see the same load of this shared machine.
const plain = await service({}, 'plain:');
const rotating = await service({ ID_HASH_KEY_PREVIOUS: 'o1:old-rotation-hash-key-0123456789abcdef' }, 'rot:');
const times = { plain: [] as number[], rotating: [] as number[] };
for (let round = 0; round < ROUNDS; round++) {
  for (let i = 0; i < USERS; i++) {
    const a = await decideTimed(plain, i);
    const b = await decideTimed(rotating, i);
    if (round > 0) {
      times.plain.push(a);
      times.rotating.push(b);
    }
  }
}
const pct = (xs: number[], p: number) =>
  [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!.toFixed(2);
console.log(
  `one key: p50 ${pct(times.plain, 0.5)} ms p90 ${pct(times.plain, 0.9)} ms | rotating: p50 ${pct(times.rotating, 0.5)} ms p90 ${pct(times.rotating, 0.9)} ms (${times.plain.length} decides each, interleaved)`,
);
await plain.close();
await rotating.close();
await server.stop();
