/**
 * The decision journal writes each decide's log line and record off the request path, in batches
 * (src/events/decision-journal.ts). A clean shutdown must lose none of them: the production process
 * on real Redis is sent SIGTERM while decides are still arriving, and every decide it answered 200
 * has its line on stdout and its record in Redis. The process's drain outlasts a flush interval, so
 * the second test closes the service the moment its decides are answered: there only the shutdown's
 * own flush can write them (removing it fails that test).
 */
import { request as httpRequest } from 'node:http';
import { Redis } from 'ioredis';
import t from 'tap';
import { shardOf } from '../../src/store/decision-records.js';
import { startServerProcess } from '../helpers/process.js';
import { entry, PREFIX, serviceEnv, simulator, TOKEN } from '../helpers/production.js';
import { startRedis } from '../helpers/redis.js';
import { captureLogs, CHROME_WINDOWS, startTestService } from '../helpers/service.js';
import { createLogger } from '../../src/logger.js';

t.teardown(() => simulator.app.close());

t.test('SIGTERM mid-load: every answered decide has its decision line and its record', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const server = await startServerProcess(
    serviceEnv(redis.url, { LOG_LEVEL: 'info', DECISION_JOURNAL_FLUSH_MS: '1000' }),
    entry,
  );
  t.teardown(() => server.child.kill('SIGKILL'));
  const reader = new Redis(redis.url);
  t.teardown(() => reader.disconnect());

  const answered: string[] = [];
  let refused = 0;
  let terminated = false;
  // One connection per decide (no keep-alive), so the drain ends with the last answer instead of
  // waiting a second for idle sockets: whatever the journal still holds then is shutdown's to write.
  const one = (i: number) =>
    new Promise<void>((resolve) => {
      const body = JSON.stringify({
        user_id: `journal-${i}`,
        device_id: `d-${i}`,
        ip: `89.160.20.${(i % 200) + 1}`,
        user_agent: CHROME_WINDOWS,
      });
      const request = httpRequest(
        `${server.base}/v1/decide`,
        {
          method: 'POST',
          agent: false,
          headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        },
        (response) => {
          let text = '';
          response.on('data', (chunk: Buffer) => (text += chunk.toString()));
          response.on('end', () => {
            const id =
              response.statusCode === 200 ? (JSON.parse(text) as { decision_id?: string }).decision_id : undefined;
            if (id) answered.push(id);
            else refused += 1;
            resolve();
          });
        },
      );
      request.on('error', () => {
        refused += 1; // the listener closed: not answered, so nothing is owed
        resolve();
      });
      request.end(body);
    });
  // Waves of 20 concurrent decides until the signal, which goes out once 100 have been answered,
  // while the next wave is in flight.
  const load = (async () => {
    for (let wave = 0; wave < 50 && server.child.exitCode === null; wave++) {
      const batch = Array.from({ length: 20 }, (_, j) => one(wave * 20 + j));
      if (!terminated && answered.length >= 100) {
        terminated = true;
        server.child.kill('SIGTERM');
      }
      await Promise.all(batch);
    }
  })();
  await load;
  t.ok(terminated, 'SIGTERM was sent while decides were arriving');
  const exit = await server.exited();
  t.equal(exit.code, 0, `a clean exit (${JSON.stringify(exit)})`);
  t.ok(answered.length >= 100, `${answered.length} decides answered 200, ${refused} refused or cut`);

  const logged = new Set(
    server
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { msg?: string; decision_id?: string })
      .filter((line) => line.msg === 'decision')
      .map((line) => line.decision_id),
  );
  t.same(
    answered.filter((id) => !logged.has(id)),
    [],
    `every answered decide has its decision line (${logged.size} lines)`,
  );
  const stored = await Promise.all(answered.map((id) => reader.exists(`${PREFIX}{dr:${shardOf(id, 8)}}:r:${id}`)));
  t.equal(stored.filter((n) => n === 1).length, answered.length, 'and its decision record in Redis');
});

t.test('closed the moment its decides are answered, the service still writes every line and record', async (t) => {
  const { lines, stream } = captureLogs();
  const service = await startTestService(
    { DECISION_JOURNAL_FLUSH_MS: '1000' },
    { logger: createLogger('info', stream) },
  );
  const ids: string[] = [];
  for (let i = 0; i < 30; i++) {
    const reply = await service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { 'content-type': 'application/json', ...service.auth },
      payload: { user_id: `close-${i}`, device_id: `d-${i}`, ip: '89.160.20.112', user_agent: CHROME_WINDOWS },
    });
    ids.push((reply.json() as { decision_id: string }).decision_id);
  }
  const before = lines.filter((l) => l.includes('"msg":"decision"')).length;
  await service.close();
  t.ok(before < ids.length, `${ids.length - before} lines still waiting for the batch's second at close`);
  const logged = new Set(
    lines
      .map((l) => JSON.parse(l) as { msg?: string; decision_id?: string })
      .filter((l) => l.msg === 'decision')
      .map((l) => l.decision_id),
  );
  t.same(
    ids.filter((id) => !logged.has(id)),
    [],
    'every line, written by the shutdown',
  );
  const stored = await Promise.all(ids.map((id) => service.records.get(id, Date.now())));
  t.equal(stored.filter(Boolean).length, ids.length, 'every record');
});
