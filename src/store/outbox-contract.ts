/**
 * The outbox of outgoing events: written before anything reports the event as sent, read by the
 * delivery worker, and acknowledged only once the receiver answered. Entries hold the signed body's
 * JSON (pseudonyms, coarse place; never a raw IP or device id).
 *
 * Work is split in shards, each delivered by one replica at a time (a lease): the events of one user
 * always land in the same shard, so they leave in the order they were written.
 */
export interface OutboxRecord {
  /** The event id, also the receiver's deduplication key (`webhook-id`). */
  readonly eventId: string;
  /** Events with the same key are delivered in append order (the user's pseudonym). */
  readonly orderKey: string;
  /** Bounded label value, for metrics and logs. */
  readonly type: string;
  readonly body: string;
  /** When the event happened (epoch ms): retries stop a retry window after it. */
  readonly at: number;
}

export interface OutboxEntry extends OutboxRecord {
  /** The storage's own id of this entry, for ack(). */
  readonly entryId: string;
}

export interface OutboxStats {
  /** Entries appended and not yet acknowledged (delivered, rejected or given up). */
  readonly depth: number;
  /** Age of the oldest of them (0 when empty). */
  readonly oldestAgeMs: number;
}

export interface Outbox {
  readonly kind: 'memory' | 'redis';
  /** False when the outbox is full (the event is dropped and counted by the caller). */
  append(record: OutboxRecord): Promise<boolean>;
  /**
   * Takes and keeps shard leases: the shards this consumer may deliver now, and how many more than
   * its fair share it holds (another replica joined). The caller gives those back with releaseShard
   * once nothing of theirs is in flight, so a hand-over never delivers an event twice.
   */
  leases(now: number): Promise<{ readonly held: readonly string[]; readonly surplus: number }>;
  releaseShard(shard: string): Promise<void>;
  /** Up to `max` entries of a held shard: first those left unacknowledged by a previous holder, then new ones. */
  read(shard: string, max: number): Promise<OutboxEntry[]>;
  /** The entry is done with (delivered, rejected or expired): it leaves the outbox. */
  ack(shard: string, entryId: string): Promise<void>;
  stats(now: number): Promise<OutboxStats>;
  /** Gives every lease back, so another replica takes over at once (after a crash it waits for the lease TTL). */
  release(): Promise<void>;
}
