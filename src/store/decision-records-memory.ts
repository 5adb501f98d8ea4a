import {
  claimable,
  encodeRecord,
  type DecisionRecord,
  type DecisionRecords,
  type EncodedRecord,
  type Label,
  type RecordedOutcome,
  type StoredDecision,
} from './decision-records.js';

export interface MemoryDecisionRecordsOptions {
  readonly ttlMs: number;
  /** Records kept at most: the oldest go first (the embedded store is one process's memory). */
  readonly maxRecords?: number;
  /**
   * Bytes of record JSON kept at most (default 64 MiB): a record with the largest attributes a caller
   * may send is ~10 KB, so a count alone would not bound the heap.
   */
  readonly maxBytes?: number;
}

interface Entry {
  record: DecisionRecord;
  bytes: number;
  outcome?: { outcome: RecordedOutcome; at: number };
  label?: Label;
}

/** About 1.2 KB of heap each with their signals (measured): 50,000 take about 60 MB; a process needing more runs Redis. */
export const MEMORY_RECORDS_MAX = 50_000;

/** The embedded decision records: insertion order is time order, so the cap drops the oldest. */
export function createMemoryDecisionRecords(options: MemoryDecisionRecordsOptions): DecisionRecords {
  const max = options.maxRecords ?? MEMORY_RECORDS_MAX;
  const maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
  let bytes = 0;
  const entries = new Map<string, Entry>();
  const sessions = new Map<string, string>();
  const open = new Map<string, { session: string; expiresAt: number }>();

  // The oldest record, found without rescanning: a fresh keys() iterator starts at the table's first
  // slot and steps over every slot an eviction emptied (V8 compacts them only when it rehashes), 21 µs
  // an eviction at 50,000 records (`test/bench/README.md`). Every record before this iterator's place
  // has been dropped, so it steps over each emptied slot once; an iterator that ran out (the map was
  // emptied) is replaced, as it would see nothing added after.
  let oldest = entries.keys();
  const dropOldest = () => {
    let next = oldest.next();
    if (next.done) {
      oldest = entries.keys();
      next = oldest.next();
    }
    if (!next.done) drop(next.value);
  };
  const live = (entry: Entry | undefined, now: number): entry is Entry =>
    !!entry && now - entry.record.at < options.ttlMs;
  const drop = (id: string) => {
    const entry = entries.get(id);
    if (entry) bytes -= entry.bytes;
    entries.delete(id);
    open.delete(id);
    const session = entry?.record.stepUp?.session;
    if (session && sessions.get(session) === id) sessions.delete(session);
  };
  const copy = (entry: Entry): StoredDecision => ({
    record: entry.record,
    ...(entry.outcome ? { outcome: { ...entry.outcome } } : {}),
    ...(entry.label ? { label: entry.label } : {}),
  });

  const settle = async (id: string, session: string, outcome: RecordedOutcome, now: number, lapse = false) => {
    const entry = entries.get(id);
    if (!live(entry, now) || entry.record.stepUp?.session !== session) return undefined;
    if (!claimable(entry.outcome?.outcome, outcome, lapse)) return undefined;
    entry.outcome = { outcome, at: now };
    open.delete(id);
    return entry.record;
  };

  const putOne = async ({ record, json }: EncodedRecord, now: number) => {
    if (entries.has(record.id)) drop(record.id);
    const size = json.length;
    entries.set(record.id, { record, bytes: size });
    bytes += size;
    while (entries.size > max || (bytes > maxBytes && entries.size > 1)) dropOldest();
    const step = record.stepUp;
    if (!step) return;
    const before = sessions.get(step.session);
    sessions.set(step.session, record.id);
    open.set(record.id, { session: step.session, expiresAt: step.expiresAt });
    if (before && before !== record.id) await settle(before, step.session, 'superseded', now);
  };

  return {
    kind: 'memory',
    async put(record, now) {
      await putOne(encodeRecord(record), now);
    },
    async putMany(batch, now) {
      for (const encoded of batch) await putOne(encoded, now);
    },
    async get(id, now) {
      const entry = entries.get(id);
      return live(entry, now) ? copy(entry) : undefined;
    },
    async decisionOf(session) {
      return sessions.get(session);
    },
    settle,
    async lapsed(now, limit) {
      const due: Array<{ id: string; session: string }> = [];
      for (const [id, o] of open) {
        if (due.length >= limit) break;
        if (o.expiresAt <= now) due.push({ id, session: o.session });
      }
      return due;
    },
    async label(id, label, now) {
      const entry = entries.get(id);
      if (!live(entry, now)) return undefined;
      const previous = entry.label;
      entry.label = label;
      return { ...(previous ? { previous } : {}), record: entry.record };
    },
    async list(since, now) {
      const out: StoredDecision[] = [];
      for (const entry of entries.values()) if (entry.record.at >= since && live(entry, now)) out.push(copy(entry));
      return out.sort((a, b) => a.record.at - b.record.at);
    },
    async close() {},
  };
}
