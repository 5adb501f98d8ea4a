/** A `withDeadline` budget ran out; the work itself goes on, and its late result is dropped. */
export class DeadlineExceeded extends Error {
  override readonly name = 'DeadlineExceeded';
}

/**
 * One promise and one timer per call (Promise.race plus finally would make three): these wrap work
 * on every decide. `late` settles the promise when the timer fires first, `failed` when the work fails.
 */
function race<T>(
  work: Promise<T>,
  ms: number,
  late: (resolve: (value: T) => void, reject: (error: unknown) => void) => void,
  failed: (error: unknown, resolve: (value: T) => void, reject: (error: unknown) => void) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => late(resolve, reject), ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        failed(error, resolve, reject);
      },
    );
  });
}

/** Settles as `work` does, or rejects with DeadlineExceeded(`label`) once `ms` have passed. */
export function withDeadline<T>(work: Promise<T>, ms: number, label = 'deadline'): Promise<T> {
  return race(
    work,
    ms,
    (_, reject) => reject(new DeadlineExceeded(label)),
    (error, _, reject) => reject(error),
  );
}

/** `work`'s value, or `fallback` when it fails or takes longer than `ms`: never rejects, never waits longer. */
export function orFallback<T>(work: Promise<T>, ms: number, fallback: T): Promise<T> {
  return race(
    work,
    ms,
    (resolve) => resolve(fallback),
    (_, resolve) => resolve(fallback),
  );
}
