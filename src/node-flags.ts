/**
 * Flags only node's command line can set (V8 sizes the heap before any module runs), so `npm start`
 * and the image's command pass them, and the entry point warns when they are missing.
 *
 * `--min-semi-space-size=16`: the young generation never shrinks below 2 × 16 MB. V8 shrinks it
 * when allocation slows (a quiet spell) and under steady traffic does not grow it back while few
 * objects survive; then scavenges ran about twice as often (the bench's 1,000/s window after a quiet
 * spell: 9.3 a second without the flag, 4.9 with it), objects in flight were promoted, and full
 * collections followed, with main-thread steps of up to 16 ms (`--trace-gc-nvp`). Probe on Redis
 * after 30 s at saturation and 15 s idle, paced 1,000/s for 10 s (`PROBE_WARM=30 PROBE_IDLE=15
 * PROBE_RATE=1000`, Node 20.20): two runs without it, p99 9.2 and 8.3 ms, p99.9 23.7 and 21.7 ms;
 * four with it, p99 3.5, 3.2, 3.3 and 3.5 ms, p99.9 5.7, 5.0, 5.1 and 5.7 ms (8 MB, two runs: p99
 * 3.5 and 3.7, p99.9 5.7 and 5.5). 16 MB is Node 20's ceiling for a semi-space on a 64-bit host with
 * a large heap limit (not measured on Node 22, which the image runs). What it costs: an idle process
 * holds up to 32 MB more, and the bench's memory-store server (48,000 users, 50,000 records) held
 * 789–824 MB under load against 556–560 MB without it, for reasons not measured (the Redis server's
 * RSS did not change). V8 caps the minimum at the maximum: `--max-semi-space-size` below 16
 * (NODE_OPTIONS allows it) or a small heap limit lowers it, and this check cannot see that.
 */
export const COMMAND_LINE_FLAGS: readonly string[] = ['--min-semi-space-size=16'];

/**
 * The command-line flags this process was started without. A flag given with another value counts
 * as given (an operator's choice), except 0, V8's "unset"; `--name value` as two words too.
 */
export function missingCommandLineFlags(execArgv: readonly string[] = process.execArgv): string[] {
  const name = (flag: string) => flag.split('=')[0]!.replace(/_/g, '-');
  const given = new Set<string>();
  execArgv.forEach((arg, i) => {
    const value = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : execArgv[i + 1];
    if (value?.trim() !== '0') given.add(name(arg));
  });
  return COMMAND_LINE_FLAGS.filter((flag) => !given.has(name(flag)));
}
