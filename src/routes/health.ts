import type { FastifyInstance } from 'fastify';
import type { RulesHolder } from '../rules-io/rules-holder.js';
import type { Store } from '../store/store.js';
import { doc, healthReply, readyReply } from './schemas.js';
import { orFallback } from '../lib/deadline.js';

export interface ReadinessCheck {
  readonly name: string;
  check(): Promise<boolean> | boolean;
}

export interface HealthDeps {
  readonly rules: RulesHolder;
  readonly store: Store;
  readonly checks: readonly ReadinessCheck[];
  readonly embedded: readonly string[];
  /** Data sets past their age limit (their signals read as unknown, so decisions are degraded). */
  readonly staleData?: () => readonly string[];
}

export function registerHealth(app: FastifyInstance, deps: HealthDeps): void {
  app.get(
    '/healthz',
    { config: { public: true }, schema: { summary: 'Process alive', response: { 200: doc(healthReply) } } },
    async () => ({ status: 'ok' }),
  );
  app.get(
    '/readyz',
    {
      config: { public: true },
      schema: { summary: 'Ready to take traffic', response: { 200: doc(readyReply), 503: doc(readyReply) } },
    },
    async (_request, reply) => {
      const failing: string[] = [];
      if (!deps.rules.current()) failing.push('rules');
      const storeUp = await orFallback(deps.store.ping(), 500, false);
      if (!storeUp) failing.push('store');
      for (const check of deps.checks) if (!(await check.check())) failing.push(check.name);
      const body = {
        status: failing.length === 0 ? 'ready' : 'not_ready',
        failing,
        ruleset: deps.rules.current()?.hash ?? null,
        store: deps.store.kind,
        embedded_defaults: deps.embedded,
        // A warning, not a failure: every replica shares the same data, so failing readiness would take
        // the whole service out of the balancer over a feed problem, while stale lists already only
        // degrade their own signals (a PASSIVE floor, never SKIP through them).
        warnings: (deps.staleData?.() ?? []).map((name) => `stale_data:${name}`),
      };
      return reply.status(failing.length === 0 ? 200 : 503).send(body);
    },
  );
}
