import type { Rung, StepUpRung } from '../engine/ladder.js';
import type { Mutable } from '../lib/mutable.js';
import type { DecisionRecord, DecisionRecords, EncodedRecord } from '../store/decision-records.js';

/** What a decide hands over: references to what it already built, nothing copied or serialised. */
export interface JournalFacts {
  readonly decisionId: string;
  /** The request's id, as on every other line of the request. */
  readonly reqId: string;
  readonly purpose: string;
  readonly enriched: {
    readonly user: string;
    readonly device: string;
    readonly signals: Readonly<Record<string, unknown>>;
  };
  readonly decision: {
    readonly action: Rung;
    readonly score: number;
    readonly reasons: ReadonlyArray<{ readonly rule: string }>;
    readonly shadow: ReadonlyArray<{ readonly rule: string; readonly action: Rung }>;
    readonly ruleset: string;
    readonly degraded: readonly string[];
    readonly bypass?: string;
  };
  readonly verification: string;
  readonly seconds: number;
  /** `enriched.signals` as JSON when the decide already made it (for its reply). */
  readonly signalsJson?: string;
  /** The Didit session handed out for this decision, if one was. */
  readonly stepUp?: { readonly sessionId: string; readonly method: StepUpRung };
}

/** Where decision lines go: the service's log stream, in its own line format (logger.ts). */
export interface DecisionLineSink {
  enabled(): boolean;
  /** One line, from its time and the JSON members after it (no braces). */
  line(time: number, reqId: string, members: string): string;
  write(chunk: string): void;
}

/**
 * Each flush is a timer, a log write through libuv's pool and one Redis script per record shard its
 * batch touches (8 shards by default): at a paced 1,000 decides/s, 5 ms batches touched ~4 shards
 * each, 20 ms batches ~7.5, so the journal's Redis calls fall by half and its timers and log writes
 * by three quarters. The cost: a crash loses up to this long of lines and records (issue #19).
 */
export const DEFAULT_JOURNAL_FLUSH_MS = 20;

export interface JournalDeps {
  readonly records: DecisionRecords;
  readonly lines: DecisionLineSink;
  /** How long a step-up may take before it counts as abandoned (PENDING_TTL_MINUTES). */
  readonly pendingTtlMs: number;
  readonly clock: () => number;
  /** Records the store did not take (a failed write, or writes piled up past `maxInFlight`). */
  readonly failed: (records: number) => void;
  readonly log: { warn(obj: object, msg: string): void };
  /** A batch is written this long after its first decide at the latest. */
  readonly flushMs?: number;
  /** ... or as soon as it holds this many. */
  readonly maxBatch?: number;
  /** Record writes (batches) in flight at most; past it a batch's records are dropped and counted, never queued. */
  readonly maxInFlight?: number;
}

interface Entry {
  readonly facts: JournalFacts;
  readonly at: number;
  readonly wallTime: number;
}

/**
 * A member's value as JSON: `null` where JSON.stringify gives nothing (undefined), so a line or record
 * assembled from parts stays valid JSON even if a field the types require is missing.
 */
const jsonValue = (value: unknown): string => JSON.stringify(value) ?? 'null';

/**
 * The decision journal: each decide's log line (what `rules replay` reads) and its decision record
 * (what rule effectiveness joins), made off the request path. The decide hands over references;
 * every `flushMs`, or at `maxBatch` decides, the journal serialises each decision's signals once for
 * both, writes the batch's lines in one write to the log stream and its records in one script per
 * shard. A clean shutdown flushes (`close`); a crash loses at most one interval of records, never a
 * decide's answer. Lines are written before the records are, so a slow store never holds them.
 */
export function createDecisionJournal(deps: JournalDeps) {
  const flushMs = deps.flushMs ?? DEFAULT_JOURNAL_FLUSH_MS;
  const maxBatch = deps.maxBatch ?? 256;
  const maxInFlight = deps.maxInFlight ?? 64;
  let batch: Entry[] = [];
  let timer: NodeJS.Timeout | undefined;
  const inFlight = new Set<Promise<void>>();

  const encode = ({ facts, at, wallTime }: Entry, withLine: boolean): { line?: string; record: EncodedRecord } => {
    const { decision, enriched } = facts;
    const rules = decision.reasons.map((r) => r.rule);
    const shadow = decision.shadow.map((s) => ({ rule: s.rule, action: s.action }));
    const signals = facts.signalsJson || jsonValue(enriched.signals);
    const stepUp = facts.stepUp
      ? { session: facts.stepUp.sessionId, method: facts.stepUp.method, expiresAt: at + deps.pendingTtlMs }
      : undefined;
    // Built in the record's field order, without spreads: its JSON is JSON.stringify(record).
    const built: Omit<DecisionRecord, 'stepUp' | 'signals'> & Partial<Mutable<DecisionRecord>> = {
      id: facts.decisionId,
      at,
      user: enriched.user,
      device: enriched.device,
      action: decision.action,
      score: decision.score,
      rules,
      shadow,
      ruleset: decision.ruleset,
      degraded: decision.degraded,
      purpose: facts.purpose,
    };
    if (stepUp) built.stepUp = stepUp;
    built.signals = enriched.signals;
    const record = built as DecisionRecord;
    // The members the record and the line share (user … degraded), serialised once for both.
    const shared = JSON.stringify({
      user: enriched.user,
      device: enriched.device,
      action: decision.action,
      score: decision.score,
      rules,
      shadow,
      ruleset: decision.ruleset,
      degraded: decision.degraded,
    }).slice(1, -1);
    const id = jsonValue(facts.decisionId);
    const step = stepUp ? `,"stepUp":${JSON.stringify(stepUp)}` : '';
    const json = `{"id":${id},"at":${JSON.stringify(at)},${shared},"purpose":${jsonValue(facts.purpose)}${step},"signals":${signals}}`;
    if (!withLine) return { record: { record, json } };
    const duration = Math.round(facts.seconds * 1e6) / 1e3;
    const bypass = decision.bypass ? `,"bypass":${JSON.stringify(decision.bypass)}` : '';
    const members = `"decision_id":${id},${shared},"verification":${jsonValue(facts.verification)},"duration_ms":${JSON.stringify(duration)}`;
    return {
      line: deps.lines.line(wallTime, facts.reqId, `${members},"signals":${signals}${bypass},"msg":"decision"`),
      record: { record, json },
    };
  };

  const store = (records: EncodedRecord[]) => {
    if (inFlight.size >= maxInFlight) {
      deps.failed(records.length);
      return;
    }
    const write = deps.records.putMany(records, deps.clock()).catch((error: unknown) => {
      // A store that stored part of the batch (one shard failing) says how many it lost.
      const lost = (error as { records?: number } | undefined)?.records ?? records.length;
      deps.failed(lost);
      deps.log.warn(
        { err: (error as Error)?.message, records: lost },
        'decision records not stored: their outcomes and labels will be missing from rule effectiveness',
      );
    });
    inFlight.add(write);
    void write.finally(() => inFlight.delete(write));
  };

  /** Writes what is batched: its lines now, its records on their way to the store. */
  const writeBatch = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (batch.length === 0) return;
    const entries = batch;
    batch = [];
    const withLines = deps.lines.enabled();
    let chunk = '';
    const records: EncodedRecord[] = [];
    for (const entry of entries) {
      const encoded = encode(entry, withLines);
      if (encoded.line) chunk += encoded.line;
      records.push(encoded.record);
    }
    if (chunk) deps.lines.write(chunk);
    store(records);
  };

  return {
    /** Writes the batch now: its lines at once (a reader of the log, such as a test, sees every answered decide), its records on their way. */
    writeNow: writeBatch,

    /** Every decide. Never throws, never awaited, O(1): the work happens at the next flush. */
    add(facts: JournalFacts): void {
      batch.push({ facts, at: deps.clock(), wallTime: Date.now() });
      if (batch.length >= maxBatch) writeBatch();
      else if (!timer) {
        timer = setTimeout(writeBatch, flushMs);
        timer.unref();
      }
    },

    /**
     * Writes the batch and waits for the record writes in flight, at most `maxMs`: what a reader of the
     * records (the webhook, the sweep, feedback) and shutdown do first. A hung store never holds them.
     */
    async settled(maxMs = 1000): Promise<void> {
      writeBatch();
      if (inFlight.size === 0) return;
      let deadline: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all([...inFlight]),
        new Promise<void>((resolve) => {
          deadline = setTimeout(resolve, maxMs);
          deadline.unref();
        }),
      ]).finally(() => clearTimeout(deadline));
    },
  };
}

export type DecisionJournal = ReturnType<typeof createDecisionJournal>;
