/**
 * The group commit's insert, measured alone (docs/benchmarks.md, "The group commit's insert, measured alone"):
 * the durable floor's insert; the event log's before `92fa339` (each row with its run id and epoch, RETURNING
 * every row, counted per run); at `92fa339` (the runs' fenced epochs returned; `run_events` without
 * `created_at`); and after (rows name their writer by number, the writers' run ids and epochs are arrays).
 * Interleaved, each insert with fresh runs, on a database of its own. Run from the repository root:
 *   npx tsx bench/passes/2026-12-03b-amd-epyc-resume/insert-statement-cost.ts [events per run] [runs per insert]
 */
import pg from 'pg';

const ADMIN_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const events = Number(process.argv[2] ?? 1000);
const runsPerInsert = Number(process.argv[3] ?? 1);
const ROUNDS = 200;

const admin = new pg.Client({ connectionString: ADMIN_URL });
await admin.connect();
const name = `outrun_insert_cost_${process.pid}`;
await admin.query(`create database ${name}`);
const url = new URL(ADMIN_URL);
url.pathname = `/${name}`;
const client = new pg.Client({ connectionString: url.toString() });
await client.connect();
try {
  await client.query(`
    create table runs (id text primary key, epoch int not null);
    create table run_events_before (run_id text not null, seq int not null, chunk json not null,
      created_at timestamptz not null default now(), primary key (run_id, seq));
    create table run_events (run_id text not null, seq int not null, chunk json not null, primary key (run_id, seq));
    create table stream_events (stream_id text not null, seq int not null, chunk json not null,
      primary key (stream_id, seq));`);
  const chunk = (index: number) =>
    JSON.stringify({
      type: 'text-delta',
      id: 'txt-0123456789abcdef0123456789abcdef01234',
      delta: `s1t${String(index).padStart(3, '0')} `,
    });
  const rowsOf = (ids: string[], key: string, epoch: boolean) =>
    `[${ids
      .flatMap((id) =>
        Array.from(
          { length: events },
          (_, index) =>
            `{"${key}":"${id}","seq":${index + 1},${epoch ? '"epoch":1,' : ''}"chunk":${chunk(index)}}`,
        ),
      )
      .join(',')}]`;
  const fenced = `
    with batch as (select * from json_to_recordset($1::json) as e(run_id text, seq int, epoch int, chunk json)),
    fenced as (select r.id, r.epoch from runs r where r.id in (select run_id from batch) order by r.id for share)`;
  const statements = {
    floor: {
      text:
        'insert into stream_events (stream_id, seq, chunk) ' +
        'select * from json_to_recordset($1::json) as e(stream_id text, seq int, chunk json)',
      rows: (ids: string[]) => rowsOf(ids, 'stream_id', false),
    },
    before: {
      text: `${fenced},
        inserted as (insert into run_events_before (run_id, seq, chunk)
          select b.run_id, b.seq, b.chunk from batch b join fenced f on f.id = b.run_id and f.epoch = b.epoch
          returning run_id)
        select run_id, count(*)::int as n from inserted group by run_id`,
      rows: (ids: string[]) => rowsOf(ids, 'run_id', true),
    },
    epochs: {
      text: `${fenced},
        inserted as (insert into run_events (run_id, seq, chunk)
          select b.run_id, b.seq, b.chunk from batch b join fenced f on f.id = b.run_id and f.epoch = b.epoch)
        select id, epoch from fenced`,
      rows: (ids: string[]) => rowsOf(ids, 'run_id', true),
    },
    writers: {
      text: `with fenced as (select r.id, r.epoch from runs r where r.id = any($2::text[]) order by r.id for share),
        inserted as (insert into run_events (run_id, seq, chunk)
          select w.id, e.seq, e.chunk from json_to_recordset($1::json) as e(w int, seq int, chunk json)
          join unnest($2::text[], $3::int[]) with ordinality as w(id, epoch, n) on w.n = e.w
          join fenced f on f.id = w.id and f.epoch = w.epoch)
        select id, epoch from fenced`,
      rows: (ids: string[]) =>
        `[${ids
          .flatMap((_, writer) =>
            Array.from(
              { length: events },
              (_, index) => `{"w":${writer + 1},"seq":${index + 1},"chunk":${chunk(index)}}`,
            ),
          )
          .join(',')}]`,
    },
  };
  const times = new Map<string, number[]>();
  let next = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (const [label, statement] of Object.entries(statements)) {
      const ids = Array.from({ length: runsPerInsert }, () => `run_${next++}`);
      if (label !== 'floor') await client.query('insert into runs select unnest($1::text[]), 1', [ids]);
      const values: unknown[] = [statement.rows(ids)];
      if (label === 'writers')
        values.push(
          ids,
          ids.map(() => 1),
        );
      const started = performance.now();
      await client.query({ name: label, text: statement.text, values });
      const list = times.get(label) ?? [];
      list.push(performance.now() - started);
      times.set(label, list);
    }
  }
  console.log(
    `${events} events × ${runsPerInsert} runs per insert, ${ROUNDS} inserts each, ms (round trip):`,
  );
  for (const [label, list] of times) {
    list.sort((a, b) => a - b);
    const at = (share: number) => list[Math.floor(share * (list.length - 1))]!.toFixed(2);
    console.log(`${label.padEnd(8)} p10 ${at(0.1)}  p50 ${at(0.5)}  p90 ${at(0.9)}`);
  }
} finally {
  await client.end();
  await admin.query(`drop database ${name}`);
  await admin.end();
}
