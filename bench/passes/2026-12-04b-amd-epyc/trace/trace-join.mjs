// Joins the client's CLIENT lines and the servers' TRACE lines of one `resume-latency.ts` run (with
// resume-trace.patch applied, RESUME_TRACE=1) by Last-Event-ID; prints per instance the medians of each stage of
// the measured live resumes (the second half). Usage: node trace-join.mjs trace-3.txt
import { readFileSync } from 'node:fs';
import { URL } from 'node:url';
const text = readFileSync(process.argv[2], 'utf8').split('\n');
const traces = text.filter((l) => l.includes('TRACE {')).map((l) => JSON.parse(l.slice(l.indexOf('{'))));
const clients = text.filter((l) => l.startsWith('CLIENT ')).map((l) => JSON.parse(l.slice(7)));
const groups = {};
for (const c of clients) {
  if (c.url.includes('/v1/runs/') === false) continue;
  const t = traces.find((t) => String(t.after) === c.after && Math.abs(t.abs0 - c.sentAt) < 50);
  if (!t) continue;
  const port = new URL(c.url).port;
  (groups[port] ??= []).push({
    connect: t.accepted - c.sentAt,
    toData: t.data - t.accepted,
    toFastify: t.abs0 - t.data,
    server: t.firstEvents,
    toClient: c.at - (t.abs0 + t.firstEvents),
    total: c.at - c.sentAt,
  });
}
const med = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
for (const [port, rows] of Object.entries(groups)) {
  const m = rows.slice(Math.floor(rows.length / 2));
  console.log(
    port,
    `n=${m.length}`,
    Object.keys(m[0])
      .map((k) => `${k} ${med(m.map((r) => r[k])).toFixed(2)}`)
      .join(', '),
  );
}
