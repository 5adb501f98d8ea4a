import http from 'node:http';

/**
 * Latency at a fixed offered load, open loop: request i is due at start + i / rate, is sent when due
 * (a 1 ms timer catches up on whatever fell due), and its latency counts from when it was due, so a
 * stall shows in every request it delays (no coordinated omission). autocannon's own rate option
 * sends each second's quota in a burst, which measures its burst, not the service.
 */
export async function fixedRate({
  port,
  token,
  bodies,
  rate,
  seconds,
  cpuSeconds,
  onAnswer,
}: {
  port: number;
  token: string;
  bodies: string[];
  rate: number;
  seconds: number;
  /** The server's CPU seconds so far: with it, the server's CPU per request at this rate is reported. */
  cpuSeconds?: () => number;
  /** Called with each answer's due time (ms since the start) and latency, for a look at the tail. */
  onAnswer?: (dueMs: number, latencyMs: number, status: number) => void;
}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const total = rate * seconds;
  const latencies: number[] = [];
  let non2xx = 0;
  const byStatus: Record<string, number> = {};
  let errors = 0;
  let sent = 0;
  // The generator's own stalls (its 1 ms timer firing late): a stall here delays requests as a slow
  // server would, so a tail the server did not cause shows in these figures.
  let generatorMaxLateMs = 0;
  let generatorLateOver2Ms = 0;
  const cpuBefore = cpuSeconds?.();
  const started = performance.now();
  await new Promise<void>((resolve) => {
    let done = 0;
    const finish = () => {
      done += 1;
      if (done === total) resolve();
    };
    let tickDue = performance.now();
    const tick = () => {
      const now = performance.now();
      const late = now - tickDue;
      if (late > generatorMaxLateMs) generatorMaxLateMs = late;
      if (late > 2) generatorLateOver2Ms += 1;
      while (sent < total && started + (sent * 1000) / rate <= now) {
        const due = started + (sent * 1000) / rate;
        const body = bodies[sent % bodies.length]!;
        sent += 1;
        const request = http.request(
          {
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: '/v1/decide',
            agent,
            headers: {
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(body),
              authorization: `Bearer ${token}`,
            },
          },
          (response) => {
            if (response.statusCode !== 200) {
              non2xx += 1;
              byStatus[String(response.statusCode)] = (byStatus[String(response.statusCode)] ?? 0) + 1;
            }
            response.resume();
            response.on('end', () => {
              latencies.push(performance.now() - due);
              onAnswer?.(due - started, performance.now() - due, response.statusCode ?? 0);
              finish();
            });
          },
        );
        request.on('error', () => {
          errors += 1;
          finish();
        });
        request.end(body);
      }
      if (sent < total) {
        tickDue = performance.now() + 1;
        setTimeout(tick, 1);
      }
    };
    tick();
  });
  const cpu = cpuSeconds && cpuBefore !== undefined ? cpuSeconds() - cpuBefore : undefined;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]! * 100) / 100;
  return {
    rate,
    achieved_rps: Math.round(latencies.length / ((performance.now() - started) / 1000)),
    p50_ms: at(0.5),
    p99_ms: at(0.99),
    p999_ms: at(0.999),
    max_ms: at(1),
    non2xx,
    non2xx_by_status: byStatus,
    errors,
    generator_max_late_ms: Math.round(generatorMaxLateMs * 100) / 100,
    generator_late_over_2ms: generatorLateOver2Ms,
    ...(cpu !== undefined ? { cpu_us_per_request: Math.round((cpu * 1e6) / Math.max(1, latencies.length)) } : {}),
  };
}
