// A reviewer's Declined after an ID_HASH_KEY rotation moved the user must still undo the grant of that session (found by an outside review).
import t from 'tap';
import { createWebhookHandler } from '../../src/didit/webhook-handler.js';
import { createMemoryStore } from '../../src/store/memory-store.js';
import { pseudonymiserOf } from '../../src/store/pseudonymise.js';
import { migrationOf } from '../../src/store/rotation.js';
import { seedPendingSession, signedVerdict, SEEDED_IP } from '../helpers/pending-session.js';

const OLD_KEY = 'o1:old-rotation-hash-key-0123456789abcdef';
const NEW_KEY = 'n2:new-rotation-hash-key-fedcba9876543210';
const SECRET = 'whsec-probe-0123456789';

t.test('Declined after migration revokes the device trust the session granted', async (t) => {
  let now = Date.now();
  const clock = () => now;
  const store = createMemoryStore();
  const oldIds = pseudonymiserOf(OLD_KEY);
  const newIds = pseudonymiserOf(NEW_KEY, OLD_KEY);
  const handler = (ids: typeof oldIds) =>
    createWebhookHandler({
      store,
      ids,
      secrets: [SECRET],
      toleranceS: 300,
      pendingTtlMs: 600_000,
      reviewTtlMs: 7 * 86_400_000,
      trustTtlMs: 30 * 86_400_000,
      claimTtlMs: 86_400_000,
      deadLetterTtlMs: 7 * 86_400_000,
      requireMethodMatch: true,
      clock,
    });
  const seeded = await seedPendingSession({ store, ids: oldIds, now, user: 'alice', workflowId: 'wf-1' });
  const approved = signedVerdict(seeded, 'Approved', { tsS: Math.floor(now / 1000) + 1, secret: SECRET });
  now += 2000;
  const a = await handler(oldIds)(Buffer.from(approved.body), approved.headers);
  t.equal(a.result, 'verified', 'approved before the rotation');
  t.equal((await store.listDevices(oldIds.id('user', 'alice'), now)).length, 1, 'device trusted under the old key');

  // Rotation: the attacker signs in from the trusted device; enrich migrates the user on touch.
  now += 60_000;
  await store.migrate(
    migrationOf(newIds, { user: 'alice', device: seeded.device, ip: SEEDED_IP, nets: [SEEDED_IP] })!,
    now,
  );
  t.equal((await store.listDevices(newIds.id('user', 'alice'), now)).length, 1, 'trust moved to the new pseudonym');

  // Didit's reviewer reverses the verdict.
  const declined = signedVerdict(seeded, 'Declined', { tsS: Math.floor(now / 1000), secret: SECRET });
  const d = await handler(newIds)(Buffer.from(declined.body), declined.headers);
  t.equal(d.result, 'verified', 'the reversal is applied');
  // Next decide migrates again (as enrich does), then reads the state.
  await store.migrate(
    migrationOf(newIds, { user: 'alice', device: seeded.device, ip: SEEDED_IP, nets: [SEEDED_IP] })!,
    now,
  );
  t.same(
    await store.listDevices(newIds.id('user', 'alice'), now),
    [],
    'the reversed grant no longer trusts the device',
  );
});
