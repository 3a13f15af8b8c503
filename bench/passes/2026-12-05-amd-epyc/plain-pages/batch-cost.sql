-- What PostgreSQL spends writing and deleting a 1,000-event run, by events per insert (b): as rows (the group
-- commit's `rows from` insert of 2026-12-04) or as one row per insert (a page of the events' lines, cut from a
-- bytea by offset, as the group commit's insert of 2026-12-05). `gen` repeats each variant's generation of the
-- events alone, so that it can be subtracted from `bench`. Run on a scratch database of the shared PostgreSQL 15:
--   psql -h 127.0.0.1 -U postgres -c 'create database scratch_ev'
--   psql -h 127.0.0.1 -U postgres -d scratch_ev -f batch-cost.sql
--   psql -h 127.0.0.1 -U postgres -c 'drop database scratch_ev'
-- Output of 2026-12-05 00:24 UTC (ms per run; rows_ms − gen_rows is the rows' cost, pages_ms − gen_pages the pages'):
--   b | gen_rows | rows_ms | gen_pages | pages_ms       (second pass)
--   1 |   17.976 |  32.816 |    15.898 |   26.941       17.735 | 34.080 | 16.024 | 27.195
--   5 |    4.437 |  12.164 |     4.043 |    6.951        4.479 | 13.574 |  6.268 |  7.197
--  20 |    1.904 |   6.452 |     1.792 |    2.989        1.895 |  7.992 |  1.799 |  3.007
-- 100 |    1.191 |   8.787 |     2.175 |    3.312        1.199 | 12.436 |  1.200 |  1.907
create table if not exists ev (run_id text, seq int, chunk json not null, primary key (run_id, seq));
create table if not exists page_rows (run_id text, first_seq int, last_seq int, events bytea not null, primary key (run_id, first_seq));
alter table page_rows alter column events set storage external;
create or replace function bench(variant int, b int, runs int) returns numeric
language plpgsql as $$
declare t0 timestamptz; r int; s int; k json; bytes bytea; lens int[]; starts int[]; seqs int[]; ws int[]; ids text[];
begin
  -- one 1,000-event run per r, written in batches of b events, then deleted
  t0 := clock_timestamp();
  for r in 1..runs loop
    s := 1;
    while s <= 1000 loop
      if variant = 0 then
        select json_agg(json_build_object('type','text-delta','id','txt-0123456789abcdefghijklmnopq','delta','s1t' || g || ' ')),
               array_agg(g), array_fill(1, array[b]) into k, seqs, ws from generate_series(s, s + b - 1) g;
        insert into ev select 'run_01jz8x3k4m5n6p7q8r9s0t1u2v' || r, e.seq, e.chunk
          from rows from (json_array_elements(k), unnest(ws), unnest(seqs)) as e(chunk, w, seq)
          join unnest(array['run_01jz8x3k4m5n6p7q8r9s0t1u2v' || r], array[1]) with ordinality as x(id, epoch, n) on x.n = e.w;
      else
        select convert_to(string_agg(json_build_object('type','text-delta','id','txt-0123456789abcdefghijklmnopq','delta','s1t' || g || ' ')::text, E'\n'), 'utf8')
          into bytes from generate_series(s, s + b - 1) g;
        insert into page_rows select 'run_01jz8x3k4m5n6p7q8r9s0t1u2v' || r, p.f, p.l, substring(bytes from p.st + 1 for p.len)
          from unnest(array[s], array[s + b - 1], array[0], array[length(bytes)]) as p(f, l, st, len);
      end if;
      s := s + b;
    end loop;
  end loop;
  if variant = 0 then delete from ev; else delete from page_rows; end if;
  return (extract(epoch from clock_timestamp() - t0) * 1000 / runs)::numeric(10, 3);
end $$;
-- the generation part alone (to subtract)
create or replace function gen(variant int, b int, runs int) returns numeric
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
      else
        select convert_to(string_agg(json_build_object('type','text-delta','id','txt-0123456789abcdefghijklmnopq','delta','s1t' || g || ' ')::text, E'\n'), 'utf8')
          into bytes from generate_series(s, s + b - 1) g;
      end if;
      s := s + b;
    end loop;
  end loop;
  return (extract(epoch from clock_timestamp() - t0) * 1000 / runs)::numeric(10, 3);
end $$;
\pset footer off
select b, gen(0, b, 5) gen_rows, bench(0, b, 5) rows_ms, gen(1, b, 5) gen_pages, bench(1, b, 5) pages_ms from unnest(array[1, 5, 20, 100]) b;
select b, gen(0, b, 5) gen_rows, bench(0, b, 5) rows_ms, gen(1, b, 5) gen_pages, bench(1, b, 5) pages_ms from unnest(array[1, 5, 20, 100]) b;
