import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { RiskError } from '../errors.js';
import type { Pseudonymiser } from '../store/pseudonymise.js';
import { migrationOf, type KnownIds } from '../store/rotation.js';
import type { Store } from '../store/store.js';
import { idText } from '../lib/id-text.js';
import { parseBody } from './validation.js';
import { devicesReply, doc, errorResponses } from './schemas.js';
import type { EventSink } from '../events/events.js';

const userParams = z.strictObject({ user_id: idText(128) });
const deviceParams = z.strictObject({ user_id: idText(128), device_id: idText(256) });

async function guarded<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch {
    throw new RiskError('RISK_ERR_UNAVAILABLE', 'state store unavailable');
  }
}

/** Users' data: erase everything, list trusted devices (opaque ids), revoke one ("this wasn't me"). */
export function registerUsers(
  app: FastifyInstance,
  deps: { store: Store; ids: Pseudonymiser; clock: () => number; events?: Pick<EventSink, 'deviceRevoked'> },
): void {
  const noContent = { 204: { type: 'null', description: 'done' } };
  const migrate = async (known: KnownIds) => {
    const migration = migrationOf(deps.ids, known);
    if (migration) await deps.store.migrate(migration, deps.clock());
  };
  app.delete(
    '/v1/users/:user_id',
    {
      config: { scope: 'users' },
      schema: {
        summary: 'Erase every key family of a user',
        params: doc(userParams),
        response: { ...noContent, ...errorResponses(400, 401, 503) },
      },
    },
    async (request, reply) => {
      const { user_id } = parseBody(userParams, request.params);
      const user = deps.ids.id('user', user_id);
      // During a rotation the user may still have state under the previous key's pseudonym: erase both.
      const previous = deps.ids.previous?.id('user', user_id);
      await guarded(async () => {
        await deps.store.erase(user);
        if (previous) await deps.store.erase(previous);
      });
      await deps.events?.deviceRevoked({ user, userId: user_id, reason: 'erase' });
      request.log.info(
        { audit: 'user_erased', user, caller: (request as { caller?: string }).caller },
        'user data erased',
      );
      return reply.status(204).send();
    },
  );

  app.get(
    '/v1/users/:user_id/devices',
    {
      config: { scope: 'users' },
      schema: {
        summary: "The user's trusted devices",
        params: doc(userParams),
        response: { 200: doc(devicesReply), ...errorResponses(400, 401, 503) },
      },
    },
    async (request) => {
      const { user_id } = parseBody(userParams, request.params);
      const user = deps.ids.id('user', user_id);
      const devices = await guarded(async () => {
        await migrate({ user: user_id });
        return deps.store.listDevices(user, deps.clock());
      });
      request.log.info(
        { audit: 'devices_listed', user, count: devices.length, caller: (request as { caller?: string }).caller },
        'trusted devices listed',
      );
      return {
        devices: devices.map((d) => ({
          device: d.device,
          first_verified_at: new Date(d.firstVerifiedAt).toISOString(),
          last_seen_at: new Date(d.lastSeenAt).toISOString(),
          expires_at: new Date(d.expiresAt).toISOString(),
        })),
      };
    },
  );

  app.delete(
    '/v1/users/:user_id/devices/:device_id',
    {
      config: { scope: 'users' },
      schema: {
        summary: 'Revoke one trusted device',
        params: doc(deviceParams),
        response: { ...noContent, ...errorResponses(400, 401, 404, 503) },
      },
    },
    async (request, reply) => {
      const { user_id, device_id } = parseBody(deviceParams, request.params);
      const user = deps.ids.id('user', user_id);
      // The caller may pass the raw device id or the opaque id from the device list.
      const opaque = /^[A-Za-z0-9_-]{1,8}\.[A-Za-z0-9_-]{22}$/.test(device_id);
      const device = opaque ? device_id : deps.ids.id('device', device_id);
      const revoked = await guarded(async () => {
        // Moved first, so the revocation lands where the next decide reads (an opaque id from the list
        // may still be a previous-key pseudonym: it is revoked as listed).
        await migrate(opaque ? { user: user_id } : { user: user_id, device: device_id });
        return deps.store.revokeDevice(user, device, deps.clock());
      });
      request.log.info(
        { audit: 'device_revoked', user, device, revoked, caller: (request as { caller?: string }).caller },
        'trusted device revoked',
      );
      if (!revoked) throw new RiskError('RISK_ERR_NOT_FOUND', 'no such trusted device');
      await deps.events?.deviceRevoked({ user, userId: user_id, device, reason: 'user' });
      return reply.status(204).send();
    },
  );
}
