#!/usr/bin/env python3
"""bench/dhat_top.py DHAT_JSON [N]: the N allocation sites with the most heap blocks.

Each site is shown by its first frames inside Pinhole, smoltcp, boringtun or tokio (the
allocator's own frames are skipped), so the line says which code allocates per packet.
"""
import json
import re
import sys

SKIP = re.compile(r"alloc::|__rust_|malloc|calloc|realloc|<alloc|RawVec|vec::|Vec<|bytes::|core::|std::|hashbrown|\?\?\?|0x[0-9A-F]+: (?!.*(pinhole|smoltcp|boringtun|tokio))")


def main():
    d = json.load(open(sys.argv[1]))
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    ftbl = d["ftbl"]
    pps = sorted(d["pps"], key=lambda p: -p["tbk"])
    total = sum(p["tbk"] for p in d["pps"]) or 1
    print(f"   top {n} allocation sites by blocks ({total:,} blocks in all):")
    for p in pps[:n]:
        frames = [ftbl[i] for i in p["fs"]]
        shown = [f for f in frames if re.search(r"pinhole|smoltcp|boringtun|tokio", f) and not SKIP.match(f.split(": ", 1)[-1])]
        where = " <- ".join(re.sub(r"^0x[0-9A-F]+: ", "", f).split(" (")[0][:70] for f in (shown or frames)[:3])
        print(f"   {100 * p['tbk'] / total:5.1f}%  {p['tbk']:>9,} blocks {p['tb'] / max(p['tbk'], 1):7.0f} B avg  {where}")


if __name__ == "__main__":
    main()
