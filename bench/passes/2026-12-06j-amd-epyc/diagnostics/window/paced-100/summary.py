# Prints, per variant and round, the 100-run wave's schedule p99 (whole; by phase), server and PostgreSQL CPU.
import glob, re, os
here = os.path.dirname(os.path.abspath(__file__))
for path in sorted(glob.glob(f'{here}/*-[0-9].txt'), key=lambda p: (p[-5], p)):
    text = open(path).read()
    phases = re.search(r'while runs start / steady / while they end, 100 runs \| ([^|]+) \| ([^|]+) \|', text)
    row = re.search(r'^\| Outrun, PostgreSQL \|\s+100 \|(.*)$', text, re.M)
    pipe = re.search(r'^\| A: AI SDK pipe\s+\|\s+100 \|(.*)$', text, re.M)
    if not (phases and row and pipe):
        print(os.path.basename(path), 'incomplete'); continue
    cells = [c.strip() for c in row.group(1).split('|')]
    pcells = [c.strip() for c in pipe.group(1).split('|')]
    print(f"{os.path.basename(path):16} Outrun p99 {cells[3]:>6} (start/steady/end {phases.group(2).strip():>20})"
          f"  pipe p99 {pcells[3]:>6} ({phases.group(1).strip():>20})  emit lag p99 {cells[5]}, server {cells[10]}% PG {cells[11]}%")
