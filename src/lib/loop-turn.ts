import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

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
 */
export interface LoopTurnOptions {
  /** How far into a loop turn requests are still admitted (ms). */
  readonly budgetMs: number;
  /** Which requests count (and may be shed); others pass untouched. */
  readonly applies: (request: FastifyRequest) => boolean;
  /** Seconds in the Retry-After of a shed answer. */
  readonly retryAfterS: number;
  /** Sends the 503 (the app's stable error body) and counts it. */
  readonly shed: (reply: FastifyReply) => FastifyReply;
  /** How long turns must have run past the budget back to back before shedding starts (ms). Default 50. */
  readonly persistMs?: number;
  /** Milliseconds, monotonic; a test may drive it. */
  readonly now?: () => number;
}

export function shedLateInTurn(app: FastifyInstance, options: LoopTurnOptions): void {
  if (!(options.budgetMs > 0)) throw new Error('loop-turn budget must be positive');
  const now = options.now ?? (() => performance.now());
  // Set by the first request of a turn; cleared in the check phase that follows the poll. The
  // immediate is queued only while requests arrive, so an idle loop still sleeps in its poll.
  let turnStarted: number | undefined;
  // One slow turn alone (a GC pause, the process descheduled on a busy host) is not a standing queue:
  // as CoDel waits for the delay to persist for an interval, shedding starts once turns have run past
  // the budget back to back for `persistMs`, and stops with the first turn that fits the budget.
  let longSince: number | undefined;
  const persistMs = options.persistMs ?? 50;
  const endTurn = () => {
    if (turnStarted !== undefined && now() - turnStarted > options.budgetMs) longSince ??= turnStarted;
    else longSince = undefined;
    turnStarted = undefined;
  };
  app.addHook('onRequest', (request, reply, done) => {
    if (!options.applies(request)) return done();
    const at = now();
    if (turnStarted === undefined) {
      turnStarted = at;
      setImmediate(endTurn);
    } else if (longSince !== undefined && turnStarted - longSince >= persistMs && at - turnStarted > options.budgetMs) {
      void options.shed(reply.header('retry-after', String(options.retryAfterS)));
      return;
    }
    done();
  });
}
