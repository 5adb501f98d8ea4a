/**
 * The class of a decide's purpose, for step-up reuse: a selfie taken for a sensitive action must not
 * be handed out again for a plain login, nor the other way round. The one place purposes are
 * compared here; when the service gets its purpose vocabulary (`request.purpose_class`), this
 * function is what it replaces. The list mirrors rules/purpose.yaml's `sensitive-purpose`.
 */
const SENSITIVE = new Set(['change_password', 'change_email', 'change_phone', 'add_payee', 'export_data', 'disable_mfa']);

export type PurposeClass = 'normal' | 'sensitive';

export function purposeClass(purpose: string): PurposeClass {
  return SENSITIVE.has(purpose) ? 'sensitive' : 'normal';
}
