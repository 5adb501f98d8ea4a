/** T with its readonly modifiers removed: hot-path records are built by assignment, then handed on as T. */
export type Mutable<T> = { -readonly [K in keyof T]: T[K] };
