/**
 * The check of an API key that a route deferred (docs/decisions/0012-key-checked-in-the-statement.md). The caller
 * came from memory (`AuthService.identify`) and the key may have been revoked since. The route either runs a
 * statement that checks the key itself and then calls `checkedByStatement`, or calls `verify` before it acts.
 * Whatever a route leaves unsettled is verified before any answer leaves (the server's error handler and
 * its `onSend` hook), so a key that no longer authenticates always gets its 401 first.
 */
export class DeferredKeyCheck {
  #authenticate: (() => Promise<unknown>) | null;
  /** The real authentication, once asked for: its failure is the request's answer. */
  #verified: Promise<void> | null = null;

  constructor(authenticate: () => Promise<unknown>) {
    this.#authenticate = authenticate;
  }

  /** Whether the key was checked: by a statement, or by `verify` (whatever it found). */
  get settled(): boolean {
    return this.#authenticate === null;
  }

  /** Authenticates for real, once: throws `UnauthorizedError` when the key no longer authenticates. */
  verify(): Promise<void> {
    const authenticate = this.#authenticate;
    this.#authenticate = null;
    this.#verified ??= authenticate ? authenticate().then(() => undefined) : Promise.resolve();
    return this.#verified;
  }

  /** A statement checked the key with its writes (`keyStillValid`) and found it valid. */
  checkedByStatement(): void {
    this.#authenticate = null;
  }
}
