// The medians of each server-side stage (TRACE lines of resume-trace.patch, RESUME_TRACE=1) of the measured live
// resumes (the second half) per server process. Usage: node trace-med.mjs trace-1.txt
import { readFileSync } from 'node:fs';
const lines = readFileSync(process.argv[2], 'utf8')
  .split('\n')
  .filter((l) => l.includes('TRACE {'));
const recs = lines.map((l) => JSON.parse(l.slice(l.indexOf('{'))));
const byPid = {};
for (const r of recs) if (![0, 5000, 9990].includes(r.after)) (byPid[r.pid] ??= []).push(r);
for (const [pid, rs] of Object.entries(byPid)) {
  const measured = rs.slice(Math.floor(rs.length / 2)); // second half: after the warm-up stream
  const keys = [...new Set(measured.flatMap((r) => Object.keys(r)))].filter(
    (k) => !['pid', 'after'].includes(k),
  );
  const med = (xs) => {
    const s = xs.sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)];
  };
  const row = keys
    .map((k) => [k, med(measured.map((r) => r[k]).filter((x) => x !== undefined))])
    .sort((a, b) => a[1] - b[1]);
  console.log(`pid ${pid} n=${measured.length}: ` + row.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', '));
}
