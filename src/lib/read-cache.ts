/**
 * A bounded cache for values that are pure functions of their key (pseudonyms, parsed user agents,
 * decoded GeoIP records): two generations of Map, the young one filled until it holds `max` entries,
 * then it becomes the old one and the previous old one is dropped. A hit is one or two Map reads
 * (lru-cache also rewrites its recency list on every read, which on the decide path, with
 * cold caches, cost more than the HMAC it saves). At most 2 × max entries; what is used within the
 * last `max` insertions survives, which is all a memo of a pure function needs.
 */
export class ReadCache<K, V> {
  private young = new Map<K, V>();
  private old = new Map<K, V>();

  constructor(private readonly max: number) {
    if (!(max >= 1)) throw new Error('ReadCache max must be at least 1');
  }

  get(key: K): V | undefined {
    const value = this.young.get(key);
    if (value !== undefined) return value;
    const aged = this.old.get(key);
    // Promote what is still used, so it outlives the next generation swap.
    if (aged !== undefined) this.set(key, aged);
    return aged;
  }

  set(key: K, value: V): void {
    this.young.set(key, value);
    if (this.young.size >= this.max) {
      this.old = this.young;
      this.young = new Map();
    }
  }

  get size(): number {
    return this.young.size + this.old.size;
  }
}
