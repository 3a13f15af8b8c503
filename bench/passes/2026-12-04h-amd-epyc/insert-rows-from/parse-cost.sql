-- What PostgreSQL spends reading a group commit's batch of 1,000 text deltas, by the form it is sent in.
-- Run on a scratch database of the shared PostgreSQL 15 (2026-12-04):
--   psql -h 127.0.0.1 -U postgres -c 'create database scratch_ev'
--   psql -h 127.0.0.1 -U postgres -d scratch_ev -f parse-cost.sql
--   psql -h 127.0.0.1 -U postgres -c 'drop database scratch_ev'
-- Results in parse-cost.txt (ms per batch of 1,000 text deltas, mean of a PL/pgSQL loop; each insert form
-- five times, interleaved, on a fresh table), run at 23:28 UTC:
--   json_to_recordset of {w, seq, chunk} objects, read only        1.18
--   json_array_elements of the chunks, read only                   0.16
--   insert via json_to_recordset (the old form)                    2.09-2.54, median 2.12
--   insert via rows from (json_array_elements, unnest, unnest)     1.61-1.69, median 1.63
create table if not exists ev (run_id text, seq int, chunk json not null, primary key (run_id, seq));
select json_agg(json_build_object('w', 1, 'seq', g, 'chunk', json_build_object('type', 'text-delta',
  'id', 'txt-0123456789abcdefghijklmnopq', 'delta', 's1t' || g || ' '))) as j from generate_series(1, 1000) g \gset
select json_agg(json_build_object('type', 'text-delta', 'id', 'txt-0123456789abcdefghijklmnopq',
  'delta', 's1t' || g || ' ')) as k from generate_series(1, 1000) g \gset
select array_agg(g) as s, array_fill(1, array[1000]) as w from generate_series(1, 1000) g \gset
create or replace function bench(j json, k json, s int[], w int[], variant int, n int) returns numeric
language plpgsql as $$
declare t0 timestamptz; i int;
begin
  t0 := clock_timestamp();
  for i in 1..n loop
    if variant = 0 then
      perform count(*) from json_to_recordset(j) as e(w int, seq int, chunk json);
    elsif variant = 1 then
      perform count(*) from json_array_elements(k);
    elsif variant = 2 then
      insert into ev select 'run_01jz8x3k4m5n6p7q8r9s0t1u2v' || i, e.seq, e.chunk
      from json_to_recordset(j) as e(w int, seq int, chunk json)
      join unnest(array['run_01jz8x3k4m5n6p7q8r9s0t1u2v'], array[1]) with ordinality as x(id, epoch, n) on x.n = e.w;
    elsif variant = 3 then
      insert into ev select 'run_01jz8x3k4m5n6p7q8r9s0t1u2v' || i, e.seq, e.chunk
      from rows from (json_array_elements(k), unnest(w), unnest(s)) as e(chunk, w, seq)
      join unnest(array['run_01jz8x3k4m5n6p7q8r9s0t1u2v'], array[1]) with ordinality as x(id, epoch, n) on x.n = e.w;
    end if;
  end loop;
  return (extract(epoch from clock_timestamp() - t0) * 1000 / n)::numeric(10, 3);
end $$;
select 'json_to_recordset, read' as form, bench(:'j', :'k', :'s', :'w', 0, 50) as ms;
select 'json_array_elements, read' as form, bench(:'j', :'k', :'s', :'w', 1, 50) as ms;
-- Each insert form five times, interleaved, on a fresh table.
truncate ev; select 'insert, json_to_recordset' as form, bench(:'j', :'k', :'s', :'w', 2, 20) as ms;
truncate ev; select 'insert, rows from' as form, bench(:'j', :'k', :'s', :'w', 3, 20) as ms;
truncate ev; select 'insert, json_to_recordset' as form, bench(:'j', :'k', :'s', :'w', 2, 20) as ms;
truncate ev; select 'insert, rows from' as form, bench(:'j', :'k', :'s', :'w', 3, 20) as ms;
truncate ev; select 'insert, json_to_recordset' as form, bench(:'j', :'k', :'s', :'w', 2, 20) as ms;
truncate ev; select 'insert, rows from' as form, bench(:'j', :'k', :'s', :'w', 3, 20) as ms;
truncate ev; select 'insert, json_to_recordset' as form, bench(:'j', :'k', :'s', :'w', 2, 20) as ms;
truncate ev; select 'insert, rows from' as form, bench(:'j', :'k', :'s', :'w', 3, 20) as ms;
truncate ev; select 'insert, json_to_recordset' as form, bench(:'j', :'k', :'s', :'w', 2, 20) as ms;
truncate ev; select 'insert, rows from' as form, bench(:'j', :'k', :'s', :'w', 3, 20) as ms;
