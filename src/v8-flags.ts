import { setFlagsFromString } from 'node:v8';

/**
 * V8's allocation-site pretenuring, off for the service's process (issue #19). When most objects
 * made at one allocation site outlive a young collection, V8 starts allocating that site's objects
 * straight into the old generation. A decide's objects live a few milliseconds, but the journal
 * holds a batch of them for up to `DECISION_JOURNAL_FLUSH_MS` and a burst (start-up, a spike) keeps
 * many alive at once: V8 judged sites long-lived (47 tenure decisions in 4 s,
 * `--trace-pretenuring-statistics`; the sampler's largest surviving sites were the rule run and the
 * journal's encoding) and filled the old generation with what dies at once, so full collections,
 * the service's longest pauses, came more often. At a paced 1,000 decides/s on Redis (probe, 10 s
 * windows, 15 runs with the flag and 9 without, not all paired): p99.9 median 16 ms against 31 ms,
 * ranges overlapping (9–46 against 12–56 ms); full collections in a window besides start-up's two
 * mostly none against mostly one or two; CPU per decide unchanged (saturated 188 against 185 µs).
 * Measured on freshly started servers; the bench's window after its saturated rounds did not show it.
 *
 * Imported first by the entry points, so it runs before any other module's code (loading the module
 * graph allocates before it; nothing was tenured that early in a trace). An operator who passes
 * `--allocation-site-pretenuring` to node keeps V8's default (NODE_OPTIONS refuses the flag: override
 * the container's command). Setting a V8 flag after start makes Node compile its built-in modules
 * loaded afterwards from source instead of its code cache (~30 ms more at start, measured by review).
 */
// V8 reads `_` and `-` in a flag's name alike.
if (!process.execArgv.some((arg) => arg.replace(/_/g, '-').includes('allocation-site-pretenuring')))
  setFlagsFromString('--no-allocation-site-pretenuring');
