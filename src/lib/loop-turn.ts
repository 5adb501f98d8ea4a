import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { openSync, readSync } from 'node:fs';
import { type GcPauses, gcPauses } from './gc-pauses.js';

/**
 * Load shedding on queueing delay, decided per event-loop turn.
 *
 * Past capacity the queue is not inside the process: requests wait in kernel socket buffers until the
 * loop polls, and one poll then hands over every readable socket, each request run to its first real
 * wait within that same turn. Nothing in flight piles up (a bound on concurrency never engages) and
 * the loop's delay, sampled every few hundred ms, reacts long after callers have timed out. What does
 * show the queue is the turn itself: every request read in a turn was already waiting when the turn's
 * poll began, so the time since the turn began is a lower bound on how long the request has waited.
 * Past `budgetMs` into a turn the rest of that turn's requests are refused at once, in `onRequest`
 * (before auth or the body): the turn ends soon, the next poll reads what arrived meanwhile, and the
 * requests admitted are those that waited least (CoDel's rule: drop on sojourn time, not queue length).
 *
 * A turn is measured in the process's CPU time, not the wall clock: on a crowded host the process is
 * descheduled mid-turn, and the turn then lasts long with little work in it. Refusing requests would
 * not give that time back, so only the work queued ahead of a request counts, and a starved process at
 * a light load sheds nothing.
 */
export interface LoopTurnOptions {
  /** How far into a loop turn, in CPU time, requests are still admitted (ms). */
  readonly budgetMs: number;
  /** Which requests count (and may be shed); others pass untouched. */
  readonly applies: (request: FastifyRequest) => boolean;
  /** Seconds in the Retry-After of a shed answer. */
  readonly retryAfterS: number;
  /** Sends the 503 (the app's stable error body) and counts it. */
  readonly shed: (reply: FastifyReply) => FastifyReply;
  /** How long turns must have run past the budget back to back before shedding starts (ms). Default 50. */
  readonly persistMs?: number;
  /** How long turns must have fit the budget before shedding stops (ms). Default 500. */
  readonly releaseMs?: number;
  /** Wall-clock milliseconds, monotonic; a test may drive it. */
  readonly now?: () => number;
  /** CPU milliseconds used by the process so far; a test may drive it. */
  readonly cpu?: () => number;
  /** Milliseconds of garbage-collector pause between two wall-clock times; a test may drive it. */
  readonly gcPauses?: GcPauses;
  /** Milliseconds the event loop has spent outside its poll so far (busy); a test may drive it. */
  readonly loopBusy?: () => number;
}

/**
 * Shedding stops early once the loop sat idle in its poll for this share of a release window: the
 * load fits again. Under overload, shedding or not, the loop hardly waits for work. (A 100 ms window
 * was too short: a load generator's bursts left gaps, shedding stopped mid-overload and the queue
 * built again, 2× p99 44–51 ms against 17–22 ms.)
 */
const RELEASE_IDLE_SHARE = 0.25;
/** Less idle than this between two long turns, and the second found its work already waiting. */
const QUEUED_IDLE_MS = 1;

export function shedLateInTurn(app: FastifyInstance, options: LoopTurnOptions): void {
  if (!(options.budgetMs > 0)) throw new Error('loop-turn budget must be positive');
  const now = options.now ?? (() => performance.now());
  const cpu = options.cpu ?? loopThreadCpuMs();
  const collecting = options.gcPauses ?? gcPauses();
  const loopBusy = options.loopBusy ?? (() => performance.eventLoopUtilization().active);
  // Set by the first request of a turn; cleared in the check phase that follows the poll. The
  // immediate is queued only while requests arrive, so an idle loop still sleeps in its poll.
  let turnStarted: number | undefined;
  // The thread's CPU clock costs a read of /proc (~3 µs; a getrusage was ~8 µs under load), so it is
  // read only where the wall clock cannot decide: a turn's CPU is at most its wall time, so a turn
  // within the budget by the wall clock is short. The CPU clock is read at a turn's start only while
  // a turn before it ran long by the wall clock (or while shedding), so a run of long turns is
  // confirmed in CPU time from its second turn on; the first, unmeasured, counts one budget at most
  // (its wall time may be time the host withheld).
  let turnCpu: number | undefined;
  let wallLong = false;
  // One slow turn alone (a GC pause) is not a standing queue. As CoDel waits for the delay to
  // persist for an interval, shedding starts once two or more long turns have followed each other
  // with no wait between them (the loop idle in its poll less than 1 ms from one long turn's end to
  // the next turn's first decide: the poll found work already queued; the loop may be busy with other
  // work between them, replies from Redis, webhooks, health checks) until their work adds up to `persistMs`. The work is the turns' own
  // CPU time, less the collector's pauses in them: a pause makes its turn long and leaves a backlog
  // that makes the next turns long too, and at half load that backlog clears in a turn or two
  // (counted, it shed 0.5–2% of decides after a 20–50 ms collection). Bursts that leave the loop idle
  // between them are not a queue either, however long each turn is.
  // Shedding stops once no turn has run long for `releaseMs` (short turns, or none: an idle loop), or
  // once the loop sat idle in its poll for a quarter of a `releaseMs` window: under overload, even
  // shedding, the loop hardly waits. Shedding itself makes turns short, and stopping at the first
  // short one would let the queue build again for `persistMs` each time, latency spiking in cycles;
  // staying on costs nothing while turns are short, as only the part of a turn past the budget is
  // shed. But a collection's backlog makes a turn long now and then at any load, and each one alone
  // kept shedding on after an overload had passed: at half load, 1–3% of decides were shed in the
  // second after a ramp.
  const persistMs = options.persistMs ?? 50;
  const releaseMs = options.releaseMs ?? 500;
  let shedding = false;
  // The work of the current run of long turns (ms), or undefined outside one, and its turns.
  let runWork: number | undefined;
  let runTurns = 0;
  // The loop's idle time (ms, from an arbitrary origin) when the last long turn ended, and whether
  // the current turn began with no idle spell since.
  let idleAtLongEnd = 0;
  let turnQueued = false;
  const idleNow = (at: number) => at - loopBusy();
  let lastLong = Number.NEGATIVE_INFINITY;
  let windowStart = 0;
  let windowBusy = 0;
  const startShedding = (at: number) => {
    shedding = true;
    windowStart = at;
    windowBusy = loopBusy();
  };
  const stillOverloaded = (at: number) => {
    if (at - lastLong >= releaseMs) return false;
    if (at - windowStart < releaseMs) return true;
    const busy = loopBusy();
    const idleShare = 1 - (busy - windowBusy) / (at - windowStart);
    windowStart = at;
    windowBusy = busy;
    return idleShare < RELEASE_IDLE_SHARE;
  };
  const endTurn = () => {
    const started = turnStarted ?? 0;
    const at = now();
    wallLong = at - started > options.budgetMs;
    // Long by the wall clock with no CPU reading (the first of a run) counts provisionally: it may
    // start a run, and the next turn, read in CPU time, confirms it or ends it.
    const measured = turnCpu !== undefined;
    turnStarted = undefined;
    // A turn long only by a collection's pause is not long either.
    const turnWork = wallLong ? (measured ? cpu() - (turnCpu as number) : at - started) - collecting(started, at) : 0;
    const long = turnWork > options.budgetMs;
    if (!long) {
      runWork = undefined;
      return;
    }
    idleAtLongEnd = idleNow(at);
    const work = measured ? turnWork : options.budgetMs;
    const continuing = runWork !== undefined && turnQueued;
    runWork = continuing ? (runWork as number) + work : work;
    runTurns = continuing ? runTurns + 1 : 1;
    if (!measured) return;
    lastLong = at;
    // One long turn alone is a burst or a pause; a second right after it finds the queue it left.
    if (!shedding && runTurns >= 2 && runWork >= persistMs) startShedding(at);
  };
  app.addHook('onRequest', (request, reply, done) => {
    if (!options.applies(request)) return done();
    const at = now();
    if (turnStarted === undefined) {
      turnStarted = at;
      turnQueued = runWork !== undefined && idleNow(at) - idleAtLongEnd < QUEUED_IDLE_MS;
      turnCpu = wallLong || shedding ? cpu() : undefined;
      setImmediate(endTurn);
      if (shedding && !stillOverloaded(at)) {
        shedding = false;
        // A new run must last `persistMs` of its own before shedding starts again.
        runWork = undefined;
      }
    } else if (
      shedding &&
      at - turnStarted > options.budgetMs &&
      turnCpu !== undefined &&
      cpu() - turnCpu > options.budgetMs
    ) {
      void options.shed(reply.header('retry-after', String(options.retryAfterS)));
      return;
    }
    done();
  });
}

/**
 * The CPU clock of the calling thread (the event loop's), in ms. The process's clock (getrusage) also
 * counts every other thread: a rule sandbox worker running a playground job or a reload check, GC
 * helpers, the libuv pool. A loop descheduled mid-turn while a worker burns a core then reads as a
 * turn long in CPU, and the gate sheds what it exists not to. Linux keeps each thread's time on CPU in
 * /proc/thread-self/schedstat (ns, first field; ~3 µs a read here); elsewhere the process clock.
 */
export function loopThreadCpuMs(): () => number {
  threadClock ??= openThreadClock();
  return threadClock;
}

// One per thread (a worker has its own copy of this module), opened on first use and kept open.
let threadClock: (() => number) | undefined;

function openThreadClock(): () => number {
  const processCpu = () => {
    const used = process.cpuUsage();
    return (used.user + used.system) / 1000;
  };
  let fd: number;
  try {
    // /proc/thread-self is resolved when opened: this thread's file, read later with pread (no reopen).
    fd = openSync('/proc/thread-self/schedstat', 'r');
  } catch {
    return processCpu;
  }
  const buffer = Buffer.alloc(64);
  const read = () => {
    const text = buffer.toString('latin1', 0, readSync(fd, buffer, 0, buffer.length, 0));
    return Number(text.slice(0, text.indexOf(' '))) / 1e6;
  };
  return Number.isFinite(read()) && read() > 0 ? read : processCpu;
}
