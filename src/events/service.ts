import { createBreaker } from '../lib/breaker.js';
import type { Outbox, OutboxStats } from '../store/outbox-contract.js';
import { createDispatcher, type DeliveryResult, type DispatcherTuning } from './dispatcher.js';
import { createEventSink, type EventSink, type EventType, type QueueResult } from './events.js';
import { parseSigningSecret } from './signing.js';
import { sealedOutbox, type Sealer } from './sealed-outbox.js';

export interface EventsSettings {
  readonly url: string;
  /** `whsec_…`, current first. */
  readonly secrets: readonly string[];
  readonly includeUserId: boolean;
  readonly decisions: boolean;
  readonly maxConcurrency: number;
  readonly timeoutMs: number;
  readonly retryMs: number;
  readonly appendDeadlineMs: number;
}

export interface EventsDeps {
  readonly outbox: Outbox;
  /** Seals bodies at rest in the outbox (the pseudonymiser). */
  readonly sealer: Sealer;
  readonly clock: () => number;
  readonly log: { warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
  readonly count: (type: EventType | string, result: QueueResult | DeliveryResult) => void;
  readonly gauges: (stats: OutboxStats) => void;
  readonly circuit: (open: boolean) => void;
  readonly fetch?: typeof fetch;
  readonly tuning?: Partial<DispatcherTuning>;
}

export interface Events {
  readonly sink: EventSink;
  close(): Promise<void>;
}

/** The sink the routes and the webhook handler emit to, and the worker that delivers the outbox. */
export function startEvents(settings: EventsSettings, deps: EventsDeps): Events {
  const keys = settings.secrets.map(parseSigningSecret);
  const breaker = createBreaker({ onChange: deps.circuit });
  const outbox = sealedOutbox(deps.outbox, deps.sealer, (entry) => {
    deps.count(entry.type, 'dropped');
    deps.log.error(
      { event_id: entry.eventId, type: entry.type },
      'event dropped: its outbox entry no longer unseals (ID_HASH_KEY changed)',
    );
  });
  const sink = createEventSink({
    outbox,
    clock: deps.clock,
    includeUserId: settings.includeUserId,
    decisions: settings.decisions,
    deadlineMs: settings.appendDeadlineMs,
    onQueued: deps.count,
    log: deps.log,
  });
  const dispatcher = createDispatcher({
    outbox,
    url: settings.url,
    keys,
    clock: deps.clock,
    maxConcurrency: settings.maxConcurrency,
    timeoutMs: settings.timeoutMs,
    retryMs: settings.retryMs,
    breaker,
    onResult: deps.count,
    onStats: deps.gauges,
    log: deps.log,
    ...(deps.fetch ? { fetch: deps.fetch } : {}),
    ...(deps.tuning ? { tuning: deps.tuning } : {}),
  });
  dispatcher.start();
  return { sink, close: () => dispatcher.stop() };
}
