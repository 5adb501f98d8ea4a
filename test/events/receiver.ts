import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * A Standard Webhooks verifier written from the spec (standardwebhooks.com, "Verifying webhook
 * authenticity"), independent of src/events/signing.ts: base64-decode the part after `whsec_`,
 * HMAC-SHA256 `${webhook-id}.${webhook-timestamp}.${body}`, compare in constant time with every
 * `v1,<base64>` of the space-separated header, and refuse a timestamp more than 5 minutes away.
 */
export function verifyStandardWebhook(
  secret: string,
  headers: Record<string, string | undefined>,
  body: string,
  nowS: number,
): { ok: true } | { ok: false; reason: string } {
  const id = headers['webhook-id'];
  const timestamp = headers['webhook-timestamp'];
  const signature = headers['webhook-signature'];
  if (!id || !timestamp || !signature) return { ok: false, reason: 'missing header' };
  if (!/^\d+$/.test(timestamp)) return { ok: false, reason: 'bad timestamp' };
  if (Math.abs(nowS - Number(timestamp)) > 300) return { ok: false, reason: 'timestamp too old or too new' };
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest();
  for (const part of signature.split(' ')) {
    const [version, value] = part.split(',');
    if (version !== 'v1' || !value) continue;
    const given = Buffer.from(value, 'base64');
    if (given.length === expected.length && timingSafeEqual(given, expected)) return { ok: true };
  }
  return { ok: false, reason: 'no matching signature' };
}

export interface Delivery {
  readonly id: string;
  readonly body: string;
  readonly event: { id: string; type: string; timestamp: string; data: Record<string, any> };
  readonly verified: boolean;
  /** webhook-timestamp of this attempt (seconds). */
  readonly timestamp: number;
  readonly answered: number | 'reset' | 'hang';
}

export type Answer = number | 'reset' | 'hang' | { redirect: string; status: number };

export interface Receiver {
  readonly url: string;
  readonly port: number;
  /** Every request received, in arrival order (failed attempts included). */
  readonly attempts: Delivery[];
  /** Deliveries answered 2xx, by event id. */
  readonly accepted: Map<string, Delivery[]>;
  /** What to answer; by default 200. */
  answer: (delivery: Omit<Delivery, 'answered'>) => Answer;
  /** Close the socket (connections refused), or listen again on the same port. */
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

/** A real HTTP receiver on 127.0.0.1 that verifies every delivery with the independent verifier above. */
export async function startReceiver(secret: string, nowS: () => number, port = 0): Promise<Receiver> {
  const attempts: Delivery[] = [];
  const accepted = new Map<string, Delivery[]>();
  const sockets = new Set<Socket>();
  const hanging = new Set<ServerResponse>();
  let server: Server;
  const receiver: Receiver = {
    url: '',
    port: 0,
    attempts,
    accepted,
    answer: () => 200,
    async down() {
      for (const response of hanging) response.destroy();
      hanging.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
    },
    async up() {
      await listen(receiver.port);
    },
    async close() {
      await receiver.down().catch(() => undefined);
    },
  };
  const handle = (request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const headers = {
        'webhook-id': request.headers['webhook-id'] as string,
        'webhook-timestamp': request.headers['webhook-timestamp'] as string,
        'webhook-signature': request.headers['webhook-signature'] as string,
      };
      const verified = verifyStandardWebhook(secret, headers, body, nowS()).ok;
      let event: Delivery['event'];
      try {
        event = JSON.parse(body);
      } catch {
        event = { id: '', type: 'unparsable', timestamp: '', data: {} };
      }
      const seen = {
        id: headers['webhook-id'] ?? '',
        body,
        event,
        verified,
        timestamp: Number(headers['webhook-timestamp']),
      };
      // An unverifiable delivery is refused like a receiver would: 401.
      const answer = verified ? receiver.answer(seen) : 401;
      const answered = typeof answer === 'object' ? answer.status : answer;
      const delivery: Delivery = { ...seen, answered };
      attempts.push(delivery);
      if (answer === 'reset') return request.socket.destroy();
      if (answer === 'hang') return void hanging.add(response);
      if (typeof answer === 'object')
        return void response.writeHead(answer.status, { location: answer.redirect }).end();
      if (answer >= 200 && answer < 300) accepted.set(seen.id, [...(accepted.get(seen.id) ?? []), delivery]);
      response.writeHead(answer, { 'content-type': 'text/plain' }).end('ok');
    });
  };
  async function listen(at: number): Promise<void> {
    server = createServer(handle);
    server.on('connection', (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(at, '127.0.0.1', resolve));
    const bound = (server.address() as AddressInfo).port;
    Object.assign(receiver, { port: bound, url: `http://127.0.0.1:${bound}/hooks` });
  }
  await listen(port);
  return receiver;
}

/** A fresh `whsec_` secret of 32 random bytes, as a receiver's dashboard would issue. */
export function newSecret(): string {
  return `whsec_${Buffer.from(Array.from({ length: 32 }, () => Math.floor(Math.random() * 256))).toString('base64')}`;
}

/** Polls `check` every 50 ms; `what` names the wait in the error (a function: read at the timeout, so it can say what is missing). */
export async function waitFor(
  check: () => boolean,
  timeoutMs: number,
  what: string | (() => string),
  onIdle?: () => void,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
    onIdle?.();
    await new Promise((r) => setTimeout(r, 50));
  }
}
