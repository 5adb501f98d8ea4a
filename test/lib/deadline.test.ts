import t from 'tap';
import { DeadlineExceeded, orFallback, withDeadline } from '../../src/lib/deadline.js';

/** A promise settled only when the test says so: no race against a clock decides the outcome. */
function manual<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

t.test('withDeadline: the work settles first, its value or its own error comes through', async (t) => {
  t.equal(await withDeadline(Promise.resolve(7), 60_000), 7);
  const failure = new Error('store down');
  await t.rejects(withDeadline(Promise.reject(failure), 60_000), failure, 'the work error, not a deadline');
});

t.test('withDeadline: work that never settles rejects with DeadlineExceeded and its label', async (t) => {
  const never = manual<number>();
  const error = await withDeadline(never.promise, 1, 'store deadline').then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(error instanceof DeadlineExceeded, 'a DeadlineExceeded');
  t.equal((error as Error).message, 'store deadline');
  // The late outcome is dropped, not an unhandled rejection.
  never.reject(new Error('late'));
  await new Promise((resolve) => setImmediate(resolve));
});

t.test(
  'orFallback: the value when it comes in time, the fallback on failure or when late; never rejects',
  async (t) => {
    t.equal(await orFallback(Promise.resolve(true), 60_000, false), true);
    t.equal(await orFallback(Promise.reject(new Error('full')), 60_000, false), false, 'failure → fallback');
    const never = manual<boolean>();
    t.equal(await orFallback(never.promise, 1, false), false, 'late → fallback');
    never.resolve(true);
  },
);
