import type { Outbox, OutboxEntry } from '../store/outbox-contract.js';

export interface Sealer {
  seal(plain: string): string;
  unseal(sealed: string): string | undefined;
}

/**
 * Bodies rest in the outbox sealed (AES-GCM under ID_HASH_KEY): with EVENTS_INCLUDE_USER_ID they
 * carry the raw user id, which must not sit in Redis in clear. An entry that no longer unseals
 * (ID_HASH_KEY replaced) cannot be sent: it is removed and reported.
 */
export function sealedOutbox(inner: Outbox, sealer: Sealer, onUnreadable: (entry: OutboxEntry) => void): Outbox {
  return {
    ...inner,
    kind: inner.kind,
    append: (record) => inner.append({ ...record, body: sealer.seal(record.body) }),
    async read(shard, max) {
      const out: OutboxEntry[] = [];
      for (const entry of await inner.read(shard, max)) {
        const body = sealer.unseal(entry.body);
        if (body !== undefined) out.push({ ...entry, body });
        else {
          onUnreadable(entry);
          await inner.ack(shard, entry.entryId);
        }
      }
      return out;
    },
  };
}
