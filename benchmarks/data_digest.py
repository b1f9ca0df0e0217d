"""What the data digest a study records costs: a 300 MB .npz and a folder of 5,000 PNGs, hashed the first time
(every file read) and again (a resume, from the digest cache). docs/data.md keeps the figures.

    .venv/bin/python benchmarks/data_digest.py /tmp/digest [--cold]

Both sources are written into the folder on the first call and reused after. The digest cache goes to
<folder>/cache (XDG_CACHE_HOME), emptied before each source's first hash. --cold drops the page cache first
(root on Linux), so the first hash reads from disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_sources(root: Path) -> list[Path]:
    npz, folder = root / "big.npz", root / "pngs"
    rng = np.random.default_rng(0)
    if not npz.exists():
        np.savez(npz, x=rng.integers(0, 256, (6000, 3, 128, 128), dtype=np.uint8), y=np.arange(6000) % 10)
    if not folder.exists():
        for c in range(10):
            (folder / str(c)).mkdir(parents=True)
            for i in range(500):
                image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
                Image.fromarray(image).save(folder / str(c) / f"{i}.png")
    return [npz, folder]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each first hash")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    os.environ["XDG_CACHE_HOME"] = str(args.folder / "cache")
    from nas.data import source_fingerprint

    for source in write_sources(args.folder):
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
        size = sum(f.stat().st_size for f in files)
        shutil.rmtree(args.folder / "cache", ignore_errors=True)
        if args.cold:
            subprocess.run(["sync"], check=True)
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        start = time.perf_counter()
        source_fingerprint(source)
        first = time.perf_counter() - start
        start = time.perf_counter()
        source_fingerprint(source)
        again = time.perf_counter() - start
        print(f"{source.name}: {len(files):,} files, {size / 1e6:.0f} MB: first {first:.2f} s, "
              f"a resume (cached) {again:.3f} s")


if __name__ == "__main__":
    main()
