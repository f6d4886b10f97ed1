"""Summarise `perf script -F comm,pid,ip,sym` (dwarf call graphs): leaf symbols, kernel time
by the user-space call that entered it, and the callers of memmove (user-space copies).

    perf record -e cpu-clock --call-graph dwarf,32768 -F 499 -p <node>,<proxy> -- sleep 4
    perf script -F comm,pid,ip,sym > out.script && python3 summarize-perf.py out.script
"""
import sys, re, collections
leafs = collections.Counter(); kern = collections.Counter(); copies = collections.Counter()
total = 0
def short(s):
    for _ in range(4): s = re.sub(r'<[^<>]*>', '', s)
    return s.strip()[:100]
OURS = ('fipstun', 'rustls', 'h2::', 'tokio_rustls', 'bytes::', 'tokio::io', 'tokio::net', 'mio::')
for block in open(sys.argv[1]).read().split('\n\n'):
    lines = [l.strip() for l in block.strip().split('\n') if l.strip()]
    if len(lines) < 2: continue
    total += 1
    frames = [(l.split(' ',1)+[''])[:2] for l in lines[1:]]
    addr, leaf = frames[0]
    if addr.startswith('ffffffff'):
        user = [s for a, s in frames if not a.startswith('ffffffff')]
        entry = user[0] if user else '?'
        leafs['[kernel]'] += 1
        ours = [s for s in user if any(o in s for o in OURS)][:1]
        kern[short(entry) + '  <- ' + (short(ours[0]) if ours else '?')] += 1
    else:
        leafs[short(leaf)] += 1
        if 'memmove' in leaf or 'memcpy' in leaf:
            sig = [s for a, s in frames[1:] if any(o in s for o in OURS)][:2]
            copies[' <- '.join(short(x) for x in sig)] += 1
pct = lambda n: f"{100*n/total:6.2f}%"
print(f"samples {total} (both processes)\n\nleaf symbols:")
for l, n in leafs.most_common(20): print(pct(n), l)
print("\nkernel time by user-space entry (syscall wrapper  <- first frame of ours):")
for l, n in kern.most_common(14): print(pct(n), l)
print("\nmemmove (user-space copies) by caller:")
for l, n in copies.most_common(12): print(pct(n), l)
