# The medians of `bench/ab.sh` output: for each scenario of `cpu-per-token`, each side's figures per pair and their
# median (and PostgreSQL's). Usage: python3 bench/ab-summary.py OUTPUT_DIRECTORY
import re,sys,glob,statistics,os
d=sys.argv[1]
rows={}
for f in sorted(glob.glob(d+'/*-*.txt')):
    side,pair=os.path.basename(f)[:-4].split('-')
    for line in open(f):
        m=re.match(r'(Outrun|plain pipe|durable floor), (.*?): ([\d.]+) ms CPU per 1,000 tokens(?: \+ ([\d.]+) PostgreSQL)?',line)
        if m:
            key=(m.group(1),m.group(2))
            rows.setdefault(key,{}).setdefault(side,[]).append((int(pair),float(m.group(3)),float(m.group(4) or 0)))
for key,sides in rows.items():
    out=[]
    for side in sorted(sides):
        v=sorted(sides[side])
        cpu=[x[1] for x in v]; pg=[x[2] for x in v]
        out.append(f"{side}: {', '.join(f'{c:g}' for c in cpu)} (median {statistics.median(cpu):g}; PG median {statistics.median(pg):g})")
    print(key, ' | '.join(out))
