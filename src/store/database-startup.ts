import { createDatabase, type CreateDatabaseOptions, type DatabaseHandle } from './database.ts';
import { describeDatabaseError, errorCode, CONNECTION_ERROR_HINTS } from './database-reachable.ts';
import { DatabaseInUseError } from './instance-lock.ts';

/** Opens (and migrates) the configured database; a PostgreSQL that cannot be reached fails with a message naming `DATABASE_URL`. */
export async function openConfiguredDatabase(options: CreateDatabaseOptions): Promise<DatabaseHandle> {
  try {
    return await createDatabase(options);
  } catch (error) {
    // Reached, and refused: its message says why and names the holder.
    if (!options.databaseUrl || error instanceof DatabaseInUseError) throw error;
    const code = errorCode(error);
    // A failed migration on a reachable server is not a connection problem: its own message says more.
    if (code && !(code in CONNECTION_ERROR_HINTS) && /^[0-9A-Z]{5}$/.test(code)) throw error;
    throw describeDatabaseError(options.databaseUrl, error);
  }
}
