/**
 * Purposes are a declared vocabulary (rules/purposes.yaml): each name a login service may send has a
 * class. A purpose nobody declared is `undeclared`, which the engine treats as sensitive: a new
 * spelling (`change-password`, `reset_password`) must cost a selfie, never silently skip one.
 */
export const PURPOSE_CLASSES = ['normal', 'sensitive'] as const;
export type DeclaredPurposeClass = (typeof PURPOSE_CLASSES)[number];
export type PurposeClass = DeclaredPurposeClass | 'undeclared';

/** The same shape the decide schema accepts, so every declared name is one a caller can send. */
export const PURPOSE_NAME = /^[a-z][a-z0-9_.-]{0,63}$/;

/**
 * A ruleset without a purposes file still knows the decide default, `login`, so existing rule
 * directories keep skipping plain sign-ins; everything else is undeclared there.
 */
export const DEFAULT_PURPOSES: ReadonlyMap<string, DeclaredPurposeClass> = new Map([['login', 'normal']]);

/** The lowest rung for an undeclared purpose, whatever the rules say. */
export const UNDECLARED_PURPOSE_FLOOR = 'PASSIVE';

export function classifyPurpose(
  vocabulary: ReadonlyMap<string, DeclaredPurposeClass> | undefined,
  purpose: string,
): PurposeClass {
  return (vocabulary ?? DEFAULT_PURPOSES).get(purpose) ?? 'undeclared';
}
