import { UserRateLimited, type Store } from './store.js';

/** Reports whether the store answered its last call (risk_store_up) without changing any result. */
export function instrumentStore(store: Store, onResult: (up: boolean) => void): Store {
  const wrapped = { ...store } as Record<string, unknown>;
  for (const name of Object.keys(store) as Array<keyof Store>) {
    const value = store[name];
    if (typeof value !== 'function' || name === 'close') continue;
    wrapped[name] = async (...args: unknown[]) => {
      try {
        const result = await (value as (...a: unknown[]) => Promise<unknown>).apply(store, args);
        onResult(true);
        return result;
      } catch (error) {
        // A spent rate limit is an answer from a healthy store.
        onResult(error instanceof UserRateLimited);
        throw error;
      }
    };
  }
  return wrapped as unknown as Store;
}
