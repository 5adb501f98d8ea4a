import Fastify, { type FastifyReply } from 'fastify';
import t, { type Test } from 'tap';
import { type GcPauses, gcPauses } from '../../src/lib/gc-pauses.js';
import { loopThreadCpuMs, shedLateInTurn } from '../../src/lib/loop-turn.js';

/**
 * The gate on a fastify app, its clocks driven by the test: each decide read costs `step` ms of CPU
 * (and `wallPerCpu` times that of wall time), so which requests a turn admits does not depend on this machine.
 * Requests injected together are read in one loop turn, as one poll hands over every readable socket.
 */
function harness(t: Test, step = 3, releaseMs?: number, wallPerCpu = 1, gcPauses: GcPauses = () => 0) {
  const app = Fastify();
  let clock = 0;
  let wall = 0;
  let shed = 0;
  let handled = 0;
  // The host withholds the CPU for `ms` at the `calls`-th read of the clock from now (off CPU, mid-turn).
  let stalled: { calls: number; ms: number } | undefined;
  const stall = (calls: number, ms: number) => {
    stalled = { calls, ms };
  };
  shedLateInTurn(app, {
    budgetMs: 10,
    persistMs: 50,
    ...(releaseMs !== undefined ? { releaseMs } : {}),
    applies: (request) => (request.routeOptions.config as { scope?: string } | undefined)?.scope === 'decide',
    retryAfterS: 1,
    // Each request reads the wall clock once on arrival: that read stands for the request's cost.
    now: () => {
      clock += step;
      wall += step * wallPerCpu;
      if (stalled && --stalled.calls === 0) {
        wall += stalled.ms;
        stalled = undefined;
      }
      return wall;
    },
    cpu: () => clock,
    gcPauses,
    // The loop is busy while decides cost CPU; `idle` is time in its poll.
    loopBusy: () => clock,
    shed: (reply: FastifyReply) => {
      shed += 1;
      return reply.status(503).send({ code: 'RISK_ERR_UNAVAILABLE' });
    },
  });
  app.post('/decide', { config: { scope: 'decide' } }, async () => {
    handled += 1;
    return { ok: true };
  });
  app.post('/other', async () => ({ ok: true }));
  t.teardown(() => app.close());
  const turn = async (count: number, url = '/decide') => {
    const answers = await Promise.all(
      Array.from({ length: count }, () => app.inject({ method: 'POST', url, payload: {} })),
    );
    // Let the check phase that ends the turn run before the next batch.
    await new Promise((r) => setImmediate(r));
    return answers;
  };
  const idle = (ms: number) => {
    wall += ms;
  };
  // Loop work that is not a decide (Redis replies, webhooks, health checks): busy, not idle.
  const work = (ms: number) => {
    clock += ms;
    wall += ms;
  };
  return { app, turn, idle, work, stall, shed: () => shed, handled: () => handled };
}

/** Three 90 ms turns back to back: shedding on, checked. */
async function overload(t: Test, h: ReturnType<typeof harness>) {
  await h.app.ready();
  await h.turn(30);
  await h.turn(30);
  t.ok(
    (await h.turn(30)).some((a) => a.statusCode === 503),
    'shedding after two long turns',
  );
}

t.test(
  'decides read late in a turn are shed with 503 + Retry-After once turns have run long for a while',
  async (t) => {
    const h = harness(t);
    await h.app.ready();
    const first = await h.turn(30);
    t.same(new Set(first.map((a) => a.statusCode)), new Set([200]), 'one long turn alone sheds nothing (a GC pause)');
    const second = await h.turn(30);
    t.same(
      new Set(second.map((a) => a.statusCode)),
      new Set([200]),
      'the turn that finds the queue it left serves too',
    );

    const third = await h.turn(30);
    const statuses = third.map((a) => a.statusCode);
    const served = statuses.filter((s) => s === 200).length;
    t.equal(served, 4, 'two long turns back to back (180 ms): the decides read within the 10 ms budget are served');
    t.same(statuses.slice(0, 4), [200, 200, 200, 200], 'in the order they were read: the rest of the turn is shed');
    t.equal(third.length - served, 26);
    for (const answer of third.filter((a) => a.statusCode === 503)) t.equal(answer.headers['retry-after'], '1');
    t.equal(h.shed(), 26, 'each shed counted');
    t.equal(h.handled(), 64, 'no shed decide reached its handler');

    const others = await h.turn(30, '/other');
    t.same(new Set(others.map((a) => a.statusCode)), new Set([200]), 'other routes are never shed');
  },
);

t.test('shedding stays on through short turns for the release time, then stops', async (t) => {
  const h = harness(t, 3, 20);
  await overload(t, h);
  t.same(
    (await h.turn(2)).map((a) => a.statusCode),
    [200, 200],
    'a short turn (6 ms) serves all',
  );
  t.ok(
    (await h.turn(30)).some((a) => a.statusCode === 503),
    'a long turn right after it still sheds its tail: one short turn does not end shedding',
  );
  for (let i = 0; i < 3; i++) await h.turn(2);
  t.same(
    new Set((await h.turn(30)).map((a) => a.statusCode)),
    new Set([200]),
    'after 20 ms of short turns shedding has stopped: the next long turn alone sheds nothing',
  );

  const idle = harness(t);
  await overload(t, idle);
  idle.idle(500);
  t.same(
    new Set((await idle.turn(30)).map((a) => a.statusCode)),
    new Set([200]),
    'after 500 ms without a decide shedding has stopped: a burst after a quiet spell is served',
  );
});

t.test(
  'shedding stops once the loop idles for a quarter of a release window, though turns still run long now and then',
  async (t) => {
    const h = harness(t);
    await overload(t, h);
    // Still overloaded: long turns back to back, the loop never idle. Each sheds its tail.
    const busy: number[] = [];
    for (let i = 0; i < 12; i++) busy.push((await h.turn(30)).filter((a) => a.statusCode === 503).length);
    t.same(
      new Set(busy),
      new Set([26]),
      'while the loop never idles (two release windows) every long turn sheds its tail',
    );
    // After the overload: each 90 ms turn (a collection's backlog, say) follows 60 ms in the poll, 40% idle.
    const after: number[] = [];
    for (let i = 0; i < 10; i++) {
      h.idle(60);
      after.push((await h.turn(30)).filter((a) => a.statusCode === 503).length);
    }
    t.ok(after[0]! > 0, 'the first turn after the overload still sheds its tail');
    // Windows of 500 ms or more, each checked at a turn's start: the first that holds enough of the
    // idle spells (25% or more) releases; four cycles in, whatever the phase of the windows.
    t.same(after.slice(5), [0, 0, 0, 0, 0], `a release window later nothing is shed (${after})`);
  },
);

t.test('turns that stay long for less than the persistence interval, or not back to back, shed nothing', async (t) => {
  // 1 ms per decide: 12-decide turns hold 12 ms of work, past the budget; five of them 60 ms.
  const h = harness(t, 1);
  await h.app.ready();
  for (let i = 0; i < 4; i++) await h.turn(12);
  t.equal(h.shed(), 0, 'four long turns in a row, 48 ms of work: not yet');
  await h.turn(12);
  t.equal(h.shed(), 0, 'the fifth makes the run 60 ms and starts shedding at its end');
  t.ok(
    (await h.turn(12)).some((a) => a.statusCode === 503),
    'the sixth long turn in a row sheds its tail',
  );

  const g = harness(t);
  await g.app.ready();
  await g.turn(30);
  g.idle(100);
  await g.turn(30);
  t.same(
    new Set((await g.turn(30)).map((a) => a.statusCode)),
    new Set([200]),
    'two long turns 100 ms apart (two GC pauses) are not a standing queue: the turn after them serves all',
  );
  t.ok(
    (await g.turn(30)).some((a) => a.statusCode === 503),
    'two back to back are',
  );
});

t.test("the collector's pauses within a run of long turns do not count towards persistence", async (t) => {
  // As above, 12 ms turns (the first 1–13 ms, the second 14–26 ms); a collection paused 1–21 ms.
  const h = harness(t, 1, undefined, 1, (from, to) => Math.max(0, Math.min(to, 21) - Math.max(from, 1)));
  await h.app.ready();
  for (let i = 0; i < 7; i++) await h.turn(12);
  t.equal(
    h.shed(),
    0,
    'the first two turns are long only by the pause (0 and 5 ms of work); the next five hold 60 ms: shedding starts at the end of the seventh',
  );
  t.ok(
    (await h.turn(12)).some((a) => a.statusCode === 503),
    'the eighth turn sheds its tail (counting the pause, the sixth would have)',
  );
});

t.test('the pauses are those V8 reports, by time, those of the turn being judged included', async (t) => {
  const pauses = gcPauses();
  const from = performance.now();
  // Queued before the turn's work, as the gate's end of turn is: Node delivers a pause's entry from an
  // immediate queued after it, so only what the reader takes itself shows this turn's pauses.
  let atEndOfTurn = -1;
  setImmediate(() => {
    atEndOfTurn = pauses(from, performance.now());
  });
  let kept: number[][] = [];
  for (let i = 0; i < 200_000; i++) {
    kept.push(new Array(16).fill(i));
    if (kept.length > 1000) kept = [];
  }
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  const to = performance.now();
  const paused = pauses(from, to);
  t.ok(paused > 0 && paused < to - from, `${paused.toFixed(2)} ms of pause in ${(to - from).toFixed(1)} ms`);
  t.ok(atEndOfTurn > 0, `seen at the end of the turn they paused: ${atEndOfTurn.toFixed(2)} ms`);
  t.equal(pauses(to + 1_000, to + 2_000), 0, 'none in a window after it');
  t.ok(pauses(from, to) >= paused, 'asked again, the same pauses (none lost to the ring)');
});

t.test('bursts with the loop idle between them are not a queue, however long each turn', async (t) => {
  // 0.3 ms a decide: 40-decide turns of 12 ms, past the budget, then 40 ms in the poll (23% busy).
  const h = harness(t, 0.3);
  await h.app.ready();
  for (let i = 0; i < 20; i++) {
    await h.turn(40);
    h.idle(40);
  }
  t.equal(h.shed(), 0, 'twenty bursts a second apart by 40 ms idle: nothing shed');
});

t.test('work between decide turns (Redis replies, webhooks) is not idle: the queue still counts', async (t) => {
  // 30-decide turns of 90 ms, 20 ms of other work between them, the loop never idle.
  const h = harness(t);
  await h.app.ready();
  for (let i = 0; i < 3; i++) {
    await h.turn(30);
    h.work(20);
  }
  t.ok(
    (await h.turn(30)).some((a) => a.statusCode === 503),
    'the fourth long turn sheds its tail: the work between turns was queued too',
  );
});

t.test("a first long turn's time off CPU does not count towards persistence", async (t) => {
  // 1 ms a decide. The first turn's third read finds 45 ms withheld by the host: 8 ms of work in 53.
  const h = harness(t, 1);
  await h.app.ready();
  h.stall(3, 45);
  await h.turn(8);
  await h.turn(12);
  await h.turn(20);
  t.equal(h.shed(), 0, 'at most one budget for the unmeasured turn, then 12 and 20 ms of work: 42 ms, not a queue yet');
});

t.test('a process the host starves (turns long in wall time, short in CPU) sheds nothing', async (t) => {
  // 0.3 ms of CPU per decide, 3 ms of wall time: 30-decide turns last 90 ms but hold 9 ms of work.
  const h = harness(t, 0.3, undefined, 10);
  await h.app.ready();
  for (let i = 0; i < 5; i++) await h.turn(30);
  t.equal(h.shed(), 0, 'refusing requests would not give the withheld time back');
});

t.test('the budget must be positive', async (t) => {
  t.throws(() => shedLateInTurn(Fastify(), { budgetMs: 0, applies: () => true, retryAfterS: 1, shed: (r) => r }));
});

t.test(
  'while turns fit the budget the CPU clock is never read (a read costs ~3 µs; a getrusage was ~8 µs under load)',
  async (t) => {
    const app = Fastify();
    let wall = 0;
    let cpuReads = 0;
    shedLateInTurn(app, {
      budgetMs: 10,
      applies: () => true,
      retryAfterS: 1,
      now: () => (wall += 0.1),
      cpu: () => {
        cpuReads += 1;
        return wall;
      },
      shed: (reply: FastifyReply) => reply.status(503).send({}),
    });
    app.post('/decide', async () => ({ ok: true }));
    t.teardown(() => app.close());
    await app.ready();
    for (let i = 0; i < 20; i++) {
      await Promise.all(Array.from({ length: 30 }, () => app.inject({ method: 'POST', url: '/decide', payload: {} })));
      await new Promise((r) => setImmediate(r));
    }
    t.equal(cpuReads, 0, '600 decides in 20 short turns, no CPU clock read');
    // 200 decides in one turn run 20 ms by the wall clock: the next turn is measured in CPU time.
    await Promise.all(Array.from({ length: 200 }, () => app.inject({ method: 'POST', url: '/decide', payload: {} })));
    await new Promise((r) => setImmediate(r));
    await Promise.all(Array.from({ length: 3 }, () => app.inject({ method: 'POST', url: '/decide', payload: {} })));
    await new Promise((r) => setImmediate(r));
    t.ok(cpuReads >= 1 && cpuReads <= 2, `after a long turn, the next is measured (${cpuReads} reads)`);
  },
);

/** A worker thread burning a core (a rule sandbox job) while the test runs. */
async function busyWorker(t: Test) {
  const { Worker } = await import('node:worker_threads');
  const worker = new Worker('for (;;) {}', { eval: true });
  await new Promise((r) => worker.once('online', r));
  t.teardown(() => worker.terminate());
}

const offCpu = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

t.test("the gate's CPU clock is the event loop's thread: another thread's work is not the loop's queue", async (t) => {
  await busyWorker(t);
  const cpu = loopThreadCpuMs();
  let wall = performance.now();
  let used = cpu();
  offCpu(60); // the loop thread off CPU (descheduled) while the worker runs
  const waited = { wall: performance.now() - wall, cpu: cpu() - used };
  t.ok(
    waited.cpu < waited.wall / 2,
    `loop off CPU for ${waited.wall.toFixed(1)} ms: ${waited.cpu.toFixed(2)} ms counted`,
  );
  wall = performance.now();
  used = cpu();
  // The loop's own work is counted (whatever share of a core this busy machine gives it).
  while (cpu() - used < 10 && performance.now() - wall < 2000);
  t.ok(
    cpu() - used >= 10,
    `loop busy: ${(cpu() - used).toFixed(1)} ms counted in ${(performance.now() - wall).toFixed(1)} ms`,
  );
});

t.test('a starved loop beside a busy worker thread sheds nothing (real clocks)', async (t) => {
  await busyWorker(t);
  const app = Fastify();
  let shed = 0;
  shedLateInTurn(app, {
    budgetMs: 10,
    persistMs: 20,
    // Each decide read finds the loop thread just back from 6 ms off CPU: turns long in wall time only.
    applies: (request) => {
      const decide = request.url === '/decide';
      if (decide) offCpu(6);
      return decide;
    },
    retryAfterS: 1,
    shed: (reply: FastifyReply) => {
      shed += 1;
      return reply.status(503).send({ code: 'RISK_ERR_UNAVAILABLE' });
    },
  });
  app.post('/decide', async () => ({ ok: true }));
  t.teardown(() => app.close());
  await app.ready();
  for (let turn = 0; turn < 6; turn++) {
    await Promise.all(Array.from({ length: 8 }, () => app.inject({ method: 'POST', url: '/decide', payload: {} })));
    await new Promise((r) => setImmediate(r));
  }
  t.equal(shed, 0, 'six turns of ~48 ms wall, the worker busy throughout: nothing shed');
});
