import type { LRUCache } from 'lru-cache';
import { growingLru } from './growing-lru.js';

/**
 * Fixed-window counters in process memory, bounded: the per-caller limit, and the fallback while the
 * shared store fails.
 */
export class LocalWindows {
  private readonly windows: LRUCache<string, { count: number; resetAt: number }>;

  constructor(max = 50_000) {
    this.windows = growingLru(max);
  }

  /** The current window's count without counting anything. */
  peek(key: string, now: number): number {
    const entry = this.windows.peek(key);
    return entry && entry.resetAt > now ? entry.count : 0;
  }

  incr(key: string, windowMs: number, now: number): { current: number; ttl: number } {
    let entry = this.windows.get(key);
    if (!entry || entry.resetAt <= now) {
      entry = { count: 0, resetAt: now + windowMs };
      this.windows.set(key, entry);
    }
    entry.count += 1;
    return { current: entry.count, ttl: entry.resetAt - now };
  }
}
