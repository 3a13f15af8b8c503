import { isDatabaseUnavailableError } from '../store/transient.ts';

/**
 * The check of an API key that a route deferred (docs/decisions/0012-key-checked-in-the-statement.md). The caller
 * came from memory (`AuthService.identify`) and the key may have been revoked since. The route either runs a
 * statement that checks the key itself and then calls `checkedByStatement`, or calls `verify` before it acts.
 * Whatever a route leaves unsettled is verified before any answer leaves (the server's error handler and
 * its `onSend` hook), so a key that no longer authenticates always gets its 401 first, with one exception:
 * an error that says the database did not answer is answered 503 without the check, which needs the database
 * too (`settleBeforeError`).
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

  /**
   * Settles the check before `error` is answered: verifies the key (throwing `UnauthorizedError` when it no
   * longer authenticates), unless `error` says the database did not answer. Then the check is waived: it
   * would wait for the same database once more, and the 503 that answers tells a revoked key nothing.
   */
  async settleBeforeError(error: unknown): Promise<void> {
    if (isDatabaseUnavailableError(error)) this.#authenticate = null;
    else await this.verify();
  }

  /** A statement checked the key with its writes (`keyStillValid`) and found it valid. */
  checkedByStatement(): void {
    this.#authenticate = null;
  }
}

/**
 * Runs a read that can check the caller's key itself (`keyStillValid`): it is given the key's id when the
 * check is deferred and unsettled, else undefined. What the read finds settles the check; when it finds
 * nothing (it throws), the key is authenticated for real first, so a key that no longer authenticates
 * answers 401, not the read's 404.
 */
export async function readCheckingKey<T>(
  keyCheck: DeferredKeyCheck | null | undefined,
  keyId: string | undefined,
  read: (keyIdToCheck: string | undefined) => Promise<T>,
): Promise<T> {
  try {
    const found = await read(keyCheck && !keyCheck.settled ? keyId : undefined);
    keyCheck?.checkedByStatement();
    return found;
  } catch (error) {
    await keyCheck?.settleBeforeError(error);
    throw error;
  }
}
