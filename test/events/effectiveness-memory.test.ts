import t from 'tap';
import { startDiditStack } from '../helpers/didit.js';
import { testClock } from '../helpers/service.js';
import { runScenario, scenarioRules } from './effectiveness-scenario.js';

const clock = testClock();
// A generous Didit deadline: the machine is shared, and this file counts outcomes, not timeouts.
const stack = await startDiditStack(clock, { DIDIT_TIMEOUT_MS: '5000', RULES_DIR: scenarioRules() });
t.teardown(() => stack.close());

t.test('memory: outcomes, labels, the report and the labelled replay match the hand-computed figures', async (t) => {
  await runScenario(t, stack, clock);
});
