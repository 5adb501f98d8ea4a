import type { Outbox, OutboxEntry, OutboxRecord } from './outbox-contract.js';

/**
 * The outbox of the memory store: one process, so one shard, always held. Loss window: every event
 * not yet delivered when the process stops (a crash, or a receiver still failing at shutdown) is
 * lost, up to `maxEntries` of them. Use Redis for events that must survive a restart.
 */
export function createMemoryOutbox(options: { maxEntries: number }): Outbox {
  const SHARD = 'memory';
  // Insertion-ordered: the oldest unacknowledged entry is the first one.
  const entries = new Map<string, OutboxEntry>();
  let handedOut = new Set<string>();
  let sequence = 0;
  return {
    kind: 'memory',
    async append(record: OutboxRecord) {
      if (entries.size >= options.maxEntries) return false;
      const entryId = String(++sequence);
      entries.set(entryId, { ...record, entryId });
      return true;
    },
    async leases() {
      return { held: [SHARD], surplus: 0 };
    },
    async releaseShard() {
      handedOut = new Set();
    },
    async read(shard, max) {
      if (shard !== SHARD) return [];
      const out: OutboxEntry[] = [];
      for (const entry of entries.values()) {
        if (out.length >= max) break;
        if (handedOut.has(entry.entryId)) continue;
        handedOut.add(entry.entryId);
        out.push(entry);
      }
      return out;
    },
    async ack(_shard, entryId) {
      entries.delete(entryId);
      handedOut.delete(entryId);
    },
    async stats(now) {
      const oldest = entries.values().next().value;
      return { depth: entries.size, oldestAgeMs: oldest ? Math.max(0, now - oldest.at) : 0 };
    },
    async release() {
      // The next reader (after a restart of the worker in this process) starts from the oldest entry again.
      handedOut = new Set();
    },
  };
}
