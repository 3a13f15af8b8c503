-- What PostgreSQL spends writing and deleting a 1,000-event run, by events per insert (b): as rows (the group
-- commit's `rows from` insert of 2026-12-04) or as one row per insert (a page of the events' lines, cut from a
-- bytea by offset, as the group commit's insert of 2026-12-05). `bench(..., false)` runs only the generation of
-- the events, so that it can be subtracted. Run on a scratch database of the shared PostgreSQL 15:
--   psql -h 127.0.0.1 -U postgres -c 'create database scratch_ev'
--   psql -h 127.0.0.1 -U postgres -d scratch_ev -f batch-cost.sql
--   psql -h 127.0.0.1 -U postgres -c 'drop database scratch_ev'
-- Output of 2026-12-05 04:09 UTC (ms per run; rows_ms − gen_rows is the rows' cost, pages_ms − gen_pages the pages'):
--   b | gen_rows | rows_ms | gen_pages | pages_ms       (second pass)
--   1 |   18.371 |  33.674 |    16.148 |   29.229       18.019 | 34.697 | 16.097 | 27.631
--   5 |    4.491 |  12.509 |     4.486 |    7.079        4.465 | 11.027 |  4.101 |  7.094
--  20 |    1.905 |   7.216 |     1.798 |    5.214        1.939 |  6.814 |  1.793 |  3.241
-- 100 |    1.184 |   5.602 |     1.163 |    1.811        1.189 |  6.237 |  1.155 |  2.116
-- (A first version with a separate generator function, run at 00:24, gave rows 14.8–16.3 / 7.7–9.1 / 4.5–6.1 /
-- 7.6–11.2 and pages 11.0–11.2 / 0.9–2.9 / 1.2 / 0.7–1.1 for b = 1 / 5 / 20 / 100.)
create table if not exists ev (run_id text, seq int, chunk json not null, primary key (run_id, seq));
create table if not exists page_rows (run_id text, first_seq int, last_seq int, events bytea not null, primary key (run_id, first_seq));
alter table page_rows alter column events set storage external;
-- One 1,000-event run per r, generated in batches of b events; with `write`, each batch is inserted (variant 0:
-- as rows, 1: as one row) and the runs are deleted at the end. Without it, only the generation, to subtract.
create or replace function bench(variant int, b int, runs int, write boolean) returns numeric
language plpgsql as $$
declare t0 timestamptz; r int; s int; k json; bytes bytea; seqs int[]; ws int[];
begin
  t0 := clock_timestamp();
  for r in 1..runs loop
    s := 1;
    while s <= 1000 loop
      if variant = 0 then
        select json_agg(json_build_object('type','text-delta','id','txt-0123456789abcdefghijklmnopq','delta','s1t' || g || ' ')),
               array_agg(g), array_fill(1, array[b]) into k, seqs, ws from generate_series(s, s + b - 1) g;
        if write then
          insert into ev select 'run_01jz8x3k4m5n6p7q8r9s0t1u2v' || r, e.seq, e.chunk
            from rows from (json_array_elements(k), unnest(ws), unnest(seqs)) as e(chunk, w, seq)
            join unnest(array['run_01jz8x3k4m5n6p7q8r9s0t1u2v' || r], array[1]) with ordinality as x(id, epoch, n) on x.n = e.w;
        end if;
      else
        select convert_to(string_agg(json_build_object('type','text-delta','id','txt-0123456789abcdefghijklmnopq','delta','s1t' || g || ' ')::text, E'\n'), 'utf8')
          into bytes from generate_series(s, s + b - 1) g;
        if write then
          insert into page_rows select 'run_01jz8x3k4m5n6p7q8r9s0t1u2v' || r, p.f, p.l, substring(bytes from p.st + 1 for p.len)
            from unnest(array[s], array[s + b - 1], array[0], array[length(bytes)]) as p(f, l, st, len);
        end if;
      end if;
      s := s + b;
    end loop;
  end loop;
  if write and variant = 0 then delete from ev; elsif write then delete from page_rows; end if;
  return (extract(epoch from clock_timestamp() - t0) * 1000 / runs)::numeric(10, 3);
end $$;
\pset footer off
select b, bench(0, b, 5, false) gen_rows, bench(0, b, 5, true) rows_ms, bench(1, b, 5, false) gen_pages,
  bench(1, b, 5, true) pages_ms from unnest(array[1, 5, 20, 100]) b;
select b, bench(0, b, 5, false) gen_rows, bench(0, b, 5, true) rows_ms, bench(1, b, 5, false) gen_pages,
  bench(1, b, 5, true) pages_ms from unnest(array[1, 5, 20, 100]) b;
