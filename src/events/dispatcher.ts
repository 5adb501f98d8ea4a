import { setMaxListeners } from 'node:events';
import type { Breaker } from '../lib/breaker.js';
import type { Outbox, OutboxEntry, OutboxStats } from '../store/outbox-contract.js';
import { signEvent } from './signing.js';

export type DeliveryResult = 'delivered' | 'rejected' | 'retry' | 'expired';

export interface DispatcherTuning {
  /** Real-time cadence of the loop: read, send what is due. */
  readonly pollMs: number;
  /** Real-time cadence of lease renewal (well under the outbox's lease TTL) and of the gauges. */
  readonly leaseEveryMs: number;
  readonly statsEveryMs: number;
  /** Entries held in memory per shard, waiting or in flight. */
  readonly maxHeldPerShard: number;
  /** Full-jitter backoff: the n-th retry waits random(0, min(cap, base · 2^(n-1))). */
  readonly backoffBaseMs: number;
  readonly backoffCapMs: number;
  readonly random: () => number;
}

export const DEFAULT_TUNING: DispatcherTuning = {
  pollMs: 200,
  leaseEveryMs: 5000,
  statsEveryMs: 5000,
  maxHeldPerShard: 500,
  backoffBaseMs: 5000,
  backoffCapMs: 3_600_000,
  random: Math.random,
};

export interface DispatcherDeps {
  readonly outbox: Outbox;
  readonly url: string;
  /** Signing keys, current first; every one signs each attempt (rotation). */
  readonly keys: readonly Buffer[];
  /** Event time and backoff run on this clock (a test's clock may jump); the loop on real timers. */
  readonly clock: () => number;
  readonly fetch?: typeof fetch;
  readonly maxConcurrency: number;
  readonly timeoutMs: number;
  /** An event still failing this long after it happened is given up (expired). */
  readonly retryMs: number;
  readonly breaker: Breaker;
  readonly onResult: (type: string, result: DeliveryResult) => void;
  readonly onStats: (stats: OutboxStats) => void;
  readonly log: { warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
  readonly tuning?: Partial<DispatcherTuning>;
}

interface Held extends OutboxEntry {
  attempts: number;
  nextAt: number;
  sending: boolean;
  /** Settled with the receiver; only the ack is left (it failed once and is retried). */
  settled: boolean;
}

interface ShardState {
  /** One FIFO per user: only its head is ever sent, so a user's events arrive in order. */
  readonly queues: Map<string, Held[]>;
  held: number;
  inFlight: number;
  releasing: boolean;
}

/**
 * Delivers the outbox to EVENTS_URL: at least once (the event id is the receiver's dedupe key),
 * in order per user, at most `maxConcurrency` requests at a time, behind a circuit breaker, never
 * following a redirect. 2xx = delivered; 4xx other than 408/429 = rejected (not retried); anything
 * else (5xx, 3xx, 408, 429, timeout, reset) is retried with full-jitter backoff until `retryMs`.
 */
/**
 * The signal stop() aborts: every attempt in flight listens on it (up to EVENTS_MAX_CONCURRENCY of
 * them, 64 at most), past the 10 listeners after which node warns of a leak that is not one.
 */
function stopSignal(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}

export function createDispatcher(deps: DispatcherDeps) {
  const tuning = { ...DEFAULT_TUNING, ...deps.tuning };
  const send = deps.fetch ?? fetch;
  const shards = new Map<string, ShardState>();
  let inFlight = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = true;
  let lastLease = 0;
  let lastStats = 0;
  let failing = false;
  const sending = new Set<Promise<void>>();
  // Aborts the requests in flight at shutdown: they stay in the outbox and are retried (by the next holder).
  let stopping = stopSignal();

  const backoff = (attempts: number) =>
    tuning.random() * Math.min(tuning.backoffCapMs, tuning.backoffBaseMs * 2 ** Math.min(attempts - 1, 30));

  async function syncLeases(): Promise<void> {
    const { held, surplus } = await deps.outbox.leases(deps.clock());
    const now = new Set(held);
    // A lease lost (Redis lost it, or we could not renew in time): another replica owns the shard now.
    for (const shard of shards.keys()) if (!now.has(shard)) shards.delete(shard);
    for (const shard of held)
      if (!shards.has(shard)) shards.set(shard, { queues: new Map(), held: 0, inFlight: 0, releasing: false });
    // Another replica joined: hand over the least busy shards once nothing of theirs is in flight.
    const extra = [...shards.entries()].filter(([, s]) => !s.releasing).sort((a, b) => a[1].held - b[1].held);
    for (let i = 0; i < surplus - [...shards.values()].filter((s) => s.releasing).length && i < extra.length; i++)
      extra[i]![1].releasing = true;
    for (const [shard, state] of shards) {
      if (state.releasing && state.inFlight === 0) {
        shards.delete(shard);
        await deps.outbox.releaseShard(shard);
      }
    }
  }

  async function fill(): Promise<void> {
    for (const [shard, state] of shards) {
      if (state.releasing || state.held > tuning.maxHeldPerShard / 2) continue;
      const entries = await deps.outbox.read(shard, tuning.maxHeldPerShard - state.held);
      for (const entry of entries) {
        let queue = state.queues.get(entry.orderKey);
        if (!queue) {
          queue = [];
          state.queues.set(entry.orderKey, queue);
        }
        queue.push({ ...entry, attempts: 0, nextAt: 0, sending: false, settled: false });
        state.held += 1;
      }
    }
  }

  async function finish(shard: string, state: ShardState, queue: Held[], head: Held): Promise<void> {
    head.settled = true;
    try {
      await deps.outbox.ack(shard, head.entryId);
    } catch {
      return; // kept at the head: the ack is retried on the next pass, so the order holds
    }
    if (queue[0] === head) queue.shift();
    if (queue.length === 0 && state.queues.get(head.orderKey) === queue) state.queues.delete(head.orderKey);
    state.held -= 1;
  }

  async function attempt(shard: string, state: ShardState, queue: Held[], head: Held): Promise<void> {
    const started = deps.clock();
    const headers = signEvent(deps.keys, head.eventId, Math.floor(started / 1000), head.body);
    let status = 0;
    let retryAfterS: number | undefined;
    // One controller an attempt, aborted by its own timer or by stop(). Not AbortSignal.any() over
    // AbortSignal.timeout(): the combined signal holds its sources weakly, and a full collection
    // during the attempt collected the timeout before it fired (nodejs/node#57736), leaving the
    // attempt, its concurrency slot and its user's queue waiting on a silent receiver for good.
    const controller = new AbortController();
    const abort = () => controller.abort();
    const timeout = setTimeout(abort, deps.timeoutMs);
    const stop = stopping.signal;
    if (stop.aborted) abort();
    else stop.addEventListener('abort', abort, { once: true });
    try {
      const response = await send(deps.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'stepup-risk-engine-events/1', ...headers },
        body: head.body,
        redirect: 'manual',
        signal: controller.signal,
      });
      status = response.status;
      const retryAfter = Number(response.headers.get('retry-after'));
      if (Number.isFinite(retryAfter) && retryAfter > 0) retryAfterS = Math.min(retryAfter, 3600);
      await response.body?.cancel().catch(() => undefined);
    } catch {
      status = 0; // timeout, reset, refused, DNS: the receiver did not answer
    } finally {
      clearTimeout(timeout);
      stop.removeEventListener('abort', abort);
    }
    const now = deps.clock();
    if (stopped && status === 0) return; // cut short by stop(): not the receiver's failure
    if (status >= 200 && status < 300) {
      deps.breaker.success();
      deps.onResult(head.type, 'delivered');
      return finish(shard, state, queue, head);
    }
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
      // The receiver is up and refuses this event: retrying cannot help.
      deps.breaker.success();
      deps.onResult(head.type, 'rejected');
      deps.log.warn({ event_id: head.eventId, type: head.type, status }, 'event rejected by the receiver; not retried');
      return finish(shard, state, queue, head);
    }
    if (status === 429 && retryAfterS !== undefined) deps.breaker.holdUntil(now + retryAfterS * 1000);
    else deps.breaker.failure(now);
    if (now - head.at >= deps.retryMs) {
      deps.onResult(head.type, 'expired');
      deps.log.error(
        { event_id: head.eventId, type: head.type, status, attempts: head.attempts + 1 },
        'event given up: the receiver failed for the whole retry window',
      );
      return finish(shard, state, queue, head);
    }
    head.attempts += 1;
    head.nextAt = now + Math.max(backoff(head.attempts), (retryAfterS ?? 0) * 1000);
    deps.onResult(head.type, 'retry');
  }

  function dispatch(): void {
    const now = deps.clock();
    for (const [shard, state] of shards) {
      if (state.releasing) continue;
      for (const queue of state.queues.values()) {
        const head = queue[0];
        if (!head || head.sending || head.nextAt > now) continue;
        if (head.settled) {
          head.sending = true;
          void finish(shard, state, queue, head).finally(() => (head.sending = false));
          continue;
        }
        if (inFlight >= deps.maxConcurrency || !deps.breaker.allow(now)) return;
        head.sending = true;
        inFlight += 1;
        state.inFlight += 1;
        const run = attempt(shard, state, queue, head)
          .catch(() => undefined)
          .finally(() => {
            head.sending = false;
            inFlight -= 1;
            state.inFlight -= 1;
            sending.delete(run);
            // A free slot: look again soon rather than after a whole poll interval.
            if (!stopped) schedule(0);
          });
        sending.add(run);
      }
    }
  }

  let running = false;
  async function tick(): Promise<void> {
    if (running || stopped) return;
    running = true;
    try {
      const wall = Date.now();
      if (wall - lastLease >= tuning.leaseEveryMs) {
        await syncLeases();
        lastLease = wall;
      }
      await fill();
      dispatch();
      if (wall - lastStats >= tuning.statsEveryMs) {
        lastStats = wall;
        deps.onStats(await deps.outbox.stats(deps.clock()));
      }
      failing = false;
    } catch (error) {
      // The outbox (Redis) is unavailable: retry on the next pass; log once per outage.
      if (!failing)
        deps.log.warn({ err: (error as Error).message }, 'event outbox unavailable; delivery resumes when it answers');
      failing = true;
    } finally {
      running = false;
      schedule(tuning.pollMs);
    }
  }

  function schedule(ms: number): void {
    if (stopped) return;
    if (timer && ms > 0) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      void tick();
    }, ms);
    timer.unref();
  }

  return {
    start(): void {
      if (!stopped) return;
      stopped = false;
      stopping = stopSignal();
      // A new run takes its leases at once (stop gave them back), not one lease interval later.
      lastLease = 0;
      schedule(0);
    },
    /** Stops taking work, cuts the requests in flight short (they are retried later), gives the leases back. */
    async stop(): Promise<void> {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      stopping.abort();
      await Promise.allSettled([...sending]);
      await deps.outbox.release().catch(() => undefined);
      shards.clear();
    },
  };
}

export type Dispatcher = ReturnType<typeof createDispatcher>;
