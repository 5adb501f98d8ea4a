import { type PerformanceEntry, PerformanceObserver } from 'node:perf_hooks';

/**
 * The garbage collector's pauses of the main thread, as reported by V8, kept for a short while so that
 * a load-shedding gate can tell a collection from a queue: a scavenge of 3–20 ms or a mark-compact of
 * 50 ms makes one loop turn long in CPU time, and the requests that arrived meanwhile make the next one
 * long too, but nothing is queued that the following turns will not clear.
 *
 * V8 reports a pause after it ends and Node delivers the entry from an immediate queued then, after
 * the gate's own end-of-turn immediate: the reader takes the entries not yet delivered first, so the
 * pauses of the turn being judged count too.
 */
export type GcPauses = (fromMs: number, toMs: number) => number;

const KEPT = 64;

let shared: GcPauses | undefined;

/** Milliseconds of collector pause within [fromMs, toMs] (performance.now() time). One observer per thread. */
export function gcPauses(): GcPauses {
  shared ??= observe();
  return shared;
}

function observe(): GcPauses {
  // A ring of the latest pauses: a gate looks back over one run of long turns (tens of ms to seconds).
  const starts = new Float64Array(KEPT);
  const ends = new Float64Array(KEPT);
  let next = 0;
  let count = 0;
  const keep = (entries: readonly PerformanceEntry[]) => {
    for (const entry of entries) {
      starts[next] = entry.startTime;
      ends[next] = entry.startTime + entry.duration;
      next = (next + 1) % KEPT;
      count = Math.min(KEPT, count + 1);
    }
  };
  const observer = new PerformanceObserver((list) => keep(list.getEntries()));
  observer.observe({ entryTypes: ['gc'] });
  return (fromMs, toMs) => {
    keep(observer.takeRecords());
    let total = 0;
    for (let i = 0; i < count; i++) {
      const overlap = Math.min(toMs, ends[i]!) - Math.max(fromMs, starts[i]!);
      if (overlap > 0) total += overlap;
    }
    return total;
  };
}
