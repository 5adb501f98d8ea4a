import { Server as NetServer } from 'node:net';
import type { Server } from 'node:http';
import type { FastifyInstance } from 'fastify';

export interface Drain {
  readonly draining: boolean;
  /**
   * Stops accepting connections, then waits (at most `maxMs`) for the open ones to close. From the
   * call on, every answer carries `connection: close`, so each kept-alive socket closes right after
   * its next answer: the server never closes a socket a client may be writing on. Sockets that sent
   * nothing for the whole wait are left for fastify's close, which reaps idle ones.
   */
  start(maxMs: number): Promise<{ ms: number; left: number }>;
}

/**
 * Graceful drain for a fastify app. fastify's own close (node's http `server.close()`) destroys
 * every socket not inside a request at once, including one whose request is still in the kernel
 * buffer of a busy process: that client sees ECONNRESET for a request it had sent.
 */
export function createDrain(app: FastifyInstance): Drain {
  let draining = false;
  // A callback-style hook: an async one costs a promise and a microtask turn on every reply.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (draining) void reply.header('connection', 'close');
    done(null, payload);
  });
  const open = (server: Server) =>
    new Promise<number>((resolve) => server.getConnections((error, count) => resolve(error ? 0 : count)));
  return {
    get draining() {
      return draining;
    },
    async start(maxMs) {
      draining = true;
      const started = Date.now();
      const server = app.server;
      // net's close, not http's: stop listening but leave kept-alive sockets to close themselves.
      if (server.listening) NetServer.prototype.close.call(server);
      let left = await open(server);
      while (left > 0 && Date.now() - started < maxMs) {
        await new Promise((r) => setTimeout(r, 20));
        left = await open(server);
      }
      return { ms: Date.now() - started, left };
    },
  };
}
