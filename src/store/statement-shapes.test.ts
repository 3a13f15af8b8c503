import {
  DummyDriver,
  Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  sql,
} from 'kysely';
import { describe, expect, it } from 'vitest';
import type { Database } from './schema.ts';
import { StatementShapes } from './statement-shapes.ts';

// Compiles only: nothing is sent anywhere.
const db = new Kysely<Database>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (kysely) => new PostgresIntrospector(kysely),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
});

interface Values extends Record<string, unknown> {
  id: string;
  at: Date;
  limit: number;
}

const touch = (v: Values, withLimit: boolean) => {
  const query = db
    .updateTable('chats')
    .set({ updated_at: v.at, title: 'constant' })
    .where('id', '=', v.id)
    .where(sql<boolean>`${v.id} <> ''`);
  return withLimit ? query.where(sql<boolean>`${v.limit} > 0`) : query;
};

describe('StatementShapes', () => {
  it('builds a shape once and binds each call its own values, in the places Kysely put them', () => {
    const shapes = new StatementShapes<{ withLimit: boolean }, Values>();
    let builds = 0;
    const compile = (values: Values, withLimit: boolean) =>
      shapes.compile({ withLimit }, values, (shape, v) => {
        builds += 1;
        return touch(v, shape.withLimit);
      });
    const first = { id: 'chat_1', at: new Date(1_000), limit: 5 };
    const second = { id: 'chat_2', at: new Date(2_000), limit: 7 };

    for (const [values, withLimit] of [
      [first, false],
      [second, false],
      [second, true],
      [first, true],
    ] as const) {
      const compiled = compile(values, withLimit);
      const direct = touch(values, withLimit).compile();
      expect(compiled.sql).toBe(direct.sql);
      expect(compiled.parameters).toEqual(direct.parameters);
    }
    expect(builds).toBe(2);
  });

  it('refuses a call that lacks a value its shape takes', () => {
    const shapes = new StatementShapes<{ withLimit: boolean }, Record<string, unknown>>();
    const build = (shape: { withLimit: boolean }, v: Record<string, unknown>) =>
      touch(v as Values, shape.withLimit);
    shapes.compile({ withLimit: true }, { id: 'chat_1', at: new Date(), limit: 1 }, build);
    expect(() => shapes.compile({ withLimit: true }, { id: 'chat_1', at: new Date() }, build)).toThrow(
      /"limit"/,
    );
  });
});
