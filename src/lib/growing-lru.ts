import { LRUCache } from 'lru-cache';

/**
 * An LRU of at most `max` entries whose memory grows with what it holds. lru-cache's `max` option
 * allocates its index arrays for `max` entries up front (about 28 bytes a slot: 14 MB for an empty
 * 500,000-entry claims map, 2.8 MB for each 100,000-entry map), whether or not they ever fill.
 * Counting every entry as size 1 against `maxSize` keeps the same bound and the same eviction order
 * (least recently used first) with arrays that grow as entries arrive.
 */
export function growingLru<K extends {}, V extends {}>(max: number): LRUCache<K, V> {
  if (!(Number.isInteger(max) && max >= 1)) throw new Error('growingLru max must be a positive integer');
  return new LRUCache<K, V>({ maxSize: max, sizeCalculation: one });
}

const one = (): number => 1;
