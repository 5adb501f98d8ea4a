import http from 'node:http';
import { CHROME_WINDOWS } from './service.js';

/** One decide's answer, or the socket error or timeout that took its place (status is then the code). */
export interface DecideReply {
  /** When the request was sent and when its answer (or error) arrived, on Date.now()'s clock. */
  readonly started: number;
  readonly at: number;
  readonly status: number | string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** A returning user's sign-in, spread over `users` user ids and as many known addresses. */
export function decideBody(prefix: string, i: number, users: number): string {
  return JSON.stringify({
    user_id: `${prefix}-${i % users}`,
    device_id: 'phone',
    ip: `89.160.20.${129 + (i % users)}`,
    user_agent: CHROME_WINDOWS,
  });
}

/**
 * POST /v1/decide on a kept-alive agent, as a login service's pool sends it (or `false`: a connection
 * of its own). Never rejects: a reset, a refused connection or the timeout is the reply's status, so a
 * loader counts every request it sent.
 */
export function postDecide(
  agent: http.Agent | false,
  port: number,
  token: string,
  body: string,
  timeoutMs = 10_000,
): Promise<DecideReply> {
  const started = Date.now();
  return new Promise((resolve) => {
    let settled = false;
    const settle = (status: number | string, headers: http.IncomingHttpHeaders = {}, text = '') => {
      if (settled) return;
      settled = true;
      resolve({ started, at: Date.now(), status, headers, body: text });
    };
    const fail = (error: NodeJS.ErrnoException) => settle(error.code ?? error.message);
    const request = http.request(
      {
        host: '127.0.0.1',
        port,
        path: '/v1/decide',
        method: 'POST',
        agent,
        timeout: timeoutMs,
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () => settle(response.statusCode ?? 0, response.headers, text));
        response.on('error', fail);
      },
    );
    request.on('timeout', () => request.destroy(new Error('timeout')));
    request.on('error', fail);
    request.end(body);
  });
}

const sleepUntil = (due: number) => {
  const wait = due - Date.now();
  return wait > 0 ? new Promise((r) => setTimeout(r, wait)) : undefined;
};

/**
 * Open loop: `send(i)` every 1000/rate ms for `seconds`, whatever the answers do (a slow service
 * meets a growing backlog, as behind a balancer). Resolves with every result once all are settled.
 */
export async function openLoop<T>(rate: number, seconds: number, send: (i: number) => Promise<T>): Promise<T[]> {
  const pending: Array<Promise<T>> = [];
  const began = Date.now();
  for (let i = 0; Date.now() - began < seconds * 1000; i++) {
    await sleepUntil(began + (i * 1000) / rate);
    pending.push(send(i));
  }
  return Promise.all(pending);
}

/**
 * Closed loop per connection: `connections` senders, each sending its next request at its next slot
 * once the previous one is answered (as autocannon's `overallRate` does: a slow service gets fewer
 * requests, never a growing backlog). `send` gets a running count across senders.
 */
export async function perConnectionLoop(
  connections: number,
  rate: number,
  seconds: number,
  send: (n: number) => Promise<unknown>,
): Promise<void> {
  const began = Date.now();
  const interval = (1000 * connections) / rate;
  let next = 0;
  await Promise.all(
    Array.from({ length: connections }, async (_, w) => {
      for (let k = 0; Date.now() - began < seconds * 1000; k++) {
        await sleepUntil(began + w * (interval / connections) + k * interval);
        await send(next++);
      }
    }),
  );
}
