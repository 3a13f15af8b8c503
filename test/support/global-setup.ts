import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { createDatabase } from '../../src/store/database.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    pgliteTemplate: string;
    /** A migrated PGlite data directory, for tests that start server processes: copy it, never open it. */
    pgliteTemplateDir: string;
    postgresTemplate: string | null;
  }
}

/**
 * Migrates one PGlite database and one PostgreSQL template database once; every test then starts from a
 * copy (a PGlite data-dir dump loads in about a second, a PostgreSQL `create database … template` in less).
 */
export async function setup(project: TestProject): Promise<() => Promise<void>> {
  const directory = mkdtempSync(join(tmpdir(), 'outrun-test-'));
  const pglite = new PGlite();
  const handle = await createDatabase({ pglite });
  await handle.close();
  const dump = await pglite.dumpDataDir('none');
  const templatePath = join(directory, 'pglite-template.tar');
  writeFileSync(templatePath, Buffer.from(await dump.arrayBuffer()));
  await pglite.close();
  project.provide('pgliteTemplate', templatePath);

  const templateDir = join(directory, 'pglite-template-dir');
  const onDisk = await createDatabase({ dataDir: templateDir });
  await onDisk.close();
  project.provide('pgliteTemplateDir', templateDir);

  let postgresTemplate: string | null = null;
  const databaseUrl = process.env.DATABASE_URL;
  if (databaseUrl) {
    postgresTemplate = `outrun_template_${process.pid}`;
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    await admin.query(`drop database if exists ${postgresTemplate}`);
    await admin.query(`create database ${postgresTemplate}`);
    await admin.end();
    const migrated = await createDatabase({
      databaseUrl: withDatabase(databaseUrl, postgresTemplate),
      poolSize: 1,
    });
    await migrated.close();
  }
  project.provide('postgresTemplate', postgresTemplate);

  return async () => {
    rmSync(directory, { recursive: true, force: true });
    if (databaseUrl && postgresTemplate) {
      const admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect();
      await admin.query(`drop database if exists ${postgresTemplate} with (force)`);
      await admin.end();
    }
  };
}

export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}
