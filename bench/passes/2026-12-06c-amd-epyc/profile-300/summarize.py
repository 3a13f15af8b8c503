import json,sys,collections,re
def load(path):
    p=json.load(open(path))
    nodes={n['id']:n for n in p['nodes']}
    total=sum(p['timeDeltas'])/1000.0
    counts=collections.Counter(p['samples'])
    n=len(p['samples'])
    per=total/n
    byfile=collections.Counter(); byfn=collections.Counter()
    for nid,c in counts.items():
        cf=nodes[nid]['callFrame']; url=cf['url']; fn=cf['functionName'] or '(anon)'
        if not url:
            key=fn if fn.startswith('(') else '(native) '+fn
        elif 'node_modules' in url:
            m=re.search(r'node_modules/((?:@[^/]+/)?[^/]+)',url); key='pkg '+m.group(1)
        elif url.startswith('node:'):
            key=url
        else:
            key=re.sub(r'.*/(src|bench)/', r'\1/', url)
        byfile[key]+=c*per
        byfn[(key, fn)]+=c*per
    return total, byfile, byfn
total,bf,bfn=load(sys.argv[1])
print(f"total {total:.0f} ms")
for k,v in bf.most_common(int(sys.argv[2]) if len(sys.argv)>2 else 30): print(f"{v:8.0f} ms {100*v/total:5.1f}%  {k}")
print('--- functions')
for (k,f),v in bfn.most_common(25): print(f"{v:8.0f} ms {100*v/total:5.1f}%  {k} :: {f}")
