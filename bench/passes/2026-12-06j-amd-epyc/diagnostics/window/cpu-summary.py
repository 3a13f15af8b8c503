# Per scenario: each round's (server + PostgreSQL) ms per 1k tokens without the window ÷ with it (always, 2 ms),
# from both cpu-*.txt files, and how many rounds the window saved in.
import glob, os, re, statistics
here = os.path.dirname(os.path.abspath(__file__))
ratios = {}
for path in sorted(glob.glob(f'{here}/cpu-*.txt')):
    runs = {}
    for line in open(path):
        m = re.match(r'round (\d+) window (\S+) ms, (.*?): server ([\d.]+) \+ PG ([\d.]+) .*?(\d+) inserts', line)
        if m:
            variant = {'2': 'always', '2/Infinity': 'always', '0': 'off'}.get(m[2], m[2])
            runs[(m[1], variant, m[3])] = (float(m[4]) + float(m[5]), int(m[6]))
    for (rnd, variant, scenario), (cpu, inserts) in runs.items():
        if variant != 'off' or (rnd, 'always', scenario) not in runs: continue
        on_cpu, on_inserts = runs[(rnd, 'always', scenario)]
        ratios.setdefault(scenario, []).append((cpu / on_cpu, inserts / on_inserts, os.path.basename(path), rnd))
for scenario, rows in sorted(ratios.items(), key=lambda kv: int(kv[0].split()[0])):
    cpu = [r[0] for r in rows]
    print(f"{scenario:16} off ÷ always, CPU: median {statistics.median(cpu):.2f} [{', '.join(f'{x:.2f}' for x in cpu)}]; "
          f"window saved in {sum(x > 1 for x in cpu)} of {len(cpu)}; inserts ×{statistics.median(r[1] for r in rows):.2f}")
