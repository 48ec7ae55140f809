"""JPEG decoding of Tiny ImageNet: one process vs one per core (``hybrezoo.data.tinyimagenet.decode_files``).

Times the serial decode (``workers=1``) on the first ``--serial`` files and the process pool on up to
``--files`` files of each data root's ``tiny-imagenet-200/train`` folder, checks that the pool's arrays
equal the serial ones, and extrapolates both to the 100,000 images of the training split.

    python benchmarks/decode_throughput.py ROOT [ROOT ...] [--files 20000] [--serial 10000] [--workers N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybrezoo.data.tinyimagenet import decode_files, decode_workers  # noqa: E402

SPLIT = 100_000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", help="folders holding tiny-imagenet-200/ (all or part of its train/ folder)")
    p.add_argument("--files", type=int, default=20_000, help="files decoded by the pool (default 20,000)")
    p.add_argument("--serial", type=int, default=10_000, help="files decoded serially (default 10,000)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: $HYBREZOO_DECODE_WORKERS or the cores)")
    args = p.parse_args()
    workers = decode_workers(args.workers)
    for root in args.roots:
        files = sorted(Path(root).glob("tiny-imagenet-200/train/*/images/*.JPEG"))[: args.files]
        if not files:
            print(f"{root}: no tiny-imagenet-200/train/*/images/*.JPEG")
            continue
        n_serial = min(args.serial, len(files))
        t = time.perf_counter()
        serial = decode_files(files[:n_serial], workers=1)
        t_serial = time.perf_counter() - t
        t = time.perf_counter()
        pooled = decode_files(files, workers=workers)
        t_pool = time.perf_counter() - t
        same = bool(np.array_equal(serial, pooled[:n_serial]))
        print(f"{root}: serial {n_serial:,} files in {t_serial:.2f} s ({n_serial / t_serial:,.0f}/s); {workers} "
              f"processes {len(files):,} files in {t_pool:.2f} s ({len(files) / t_pool:,.0f}/s); identical: {same}; "
              f"the {SPLIT:,}-image split: serial {SPLIT * t_serial / n_serial:.1f} s, {workers} processes "
              f"{SPLIT * t_pool / len(files):.1f} s (extrapolated)")


if __name__ == "__main__":
    main()
