// Decide cost with and without decision records, alternating in one process: npx tsx test/bench/decision-records.ts
import { startTestService } from '../helpers/service.js';

const service = await startTestService({ LOG_LEVEL: 'silent' });
const original = service.effectiveness.decided;
let n = 0;
const decide = () =>
  service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...service.auth },
    payload: JSON.stringify({
      user_id: `user-${++n}`,
      device_id: `device-${n}`,
      ip: `10.${(n >> 8) & 255}.${n & 255}.1`,
    }),
  });
async function round(on: boolean, count: number): Promise<number> {
  (service.effectiveness as { decided: typeof original }).decided = on ? original : () => undefined;
  const start = process.hrtime.bigint();
  for (let i = 0; i < count; i += 50) await Promise.all(Array.from({ length: 50 }, decide));
  await service.effectiveness.flush();
  return Number(process.hrtime.bigint() - start) / 1e6 / count;
}
await round(true, 2000);
const results: Record<string, number[]> = { on: [], off: [] };
for (let r = 0; r < 6; r++) {
  results.off!.push(await round(false, 5000));
  results.on!.push(await round(true, 5000));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(
  JSON.stringify({
    ms_per_decide_off: results.off!.map((x) => x.toFixed(3)),
    ms_per_decide_on: results.on!.map((x) => x.toFixed(3)),
    median_off: median(results.off!).toFixed(3),
    median_on: median(results.on!).toFixed(3),
    records: (await service.records.list(0, Date.now())).length,
    heapMB: Math.round(process.memoryUsage().heapUsed / 1e6),
  }),
);
await service.close();
