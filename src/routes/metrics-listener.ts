import Fastify, { type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';

/** The internal listener: /metrics only, never on the public port (ASVS 13.4.5). */
export function createMetricsApp(registry: Registry): FastifyInstance {
  const app = Fastify({ logger: false });
  app.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()));
  return app;
}
