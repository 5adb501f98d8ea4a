import { createRequire } from 'node:module';
import t from 'tap';
import { createRecheckGuard } from '../../src/rules-io/regex-guard.js';
import { startTestService } from '../helpers/service.js';

// recheck is ~9 MB of live heap that every full collection marks again: a serving process whose
// rules have no `matches()` (the shipped ones) must not load it. This file's process imports
// nothing else that loads it, so its module cache tells.
const moduleCache = createRequire(import.meta.url).cache;
const recheckLoaded = () => Object.keys(moduleCache).some((file) => file.includes('/node_modules/recheck/'));

t.test('booting on the shipped rules does not load recheck; the first pattern to check does', async (t) => {
  const service = await startTestService();
  t.teardown(() => service.close());
  const answer = await service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: service.auth,
    payload: { user_id: 'lazy-recheck', device_id: 'd1', ip: '89.160.20.112' },
  });
  t.equal(answer.statusCode, 200, 'the service decides');
  t.notOk(recheckLoaded(), 'recheck is not in the serving process');

  // Budgets far above the defaults: this is about loading, and a loaded machine must not refuse the safe pattern.
  const guard = createRecheckGuard({ perPatternMs: 5000, perLoadMs: 10_000 });
  t.equal(guard('^pay_[a-z]+$'), undefined, 'a safe pattern passes');
  t.ok(recheckLoaded(), 'checking a pattern loads it');
  t.match(guard('^(a+)+$'), /catastrophic backtracking/, 'and it still refuses a vulnerable one');
});
