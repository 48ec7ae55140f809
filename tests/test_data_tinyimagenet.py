"""The Tiny ImageNet reader on the real data (the development environment's shared/data/tiny-imagenet-200
archives, found beside or above the checkout), unpacked into a temporary folder; skipped where the
archives are absent, as on a user's machine."""
import numpy as np

from hybrezoo.data import load_split, open_source
from hybrezoo.data.tinyimagenet import _decode


def test_real_tinyimagenet_layout_counts_and_label_order(tiny_imagenet_root, tmp_path):
    source = open_source("tinyimagenet", tiny_imagenet_root)
    wnids = (tiny_imagenet_root / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    assert len(wnids) == 200 and source.wnids == wnids

    files, labels = source.listing("train")
    assert len(files) == 100_000
    assert np.bincount(labels).tolist() == [500] * 200
    # label i is the i-th line of wnids.txt: every file sits in its class's folder
    assert all(f.parts[-3] == wnids[label] for f, label in zip(files[::997], labels[::997]))

    val = load_split("tinyimagenet", "val", tiny_imagenet_root, cache_dir=tmp_path)
    assert val.images.shape == (10_000, 64, 64, 3) and val.classes == wnids
    assert np.bincount(val.labels).tolist() == [50] * 200
    annotations = dict(line.split("\t")[:2] for line in
                       (tiny_imagenet_root / "tiny-imagenet-200/val/val_annotations.txt").read_text().splitlines())
    assert [wnids[i] for i in val.labels[:50]] == [annotations[f"val_{i}.JPEG"] for i in range(50)]

    # decoding the whole training split takes ~30 s on 2 cores; decode a spread sample of it instead
    sample = files[::50]
    images = np.stack([_decode(f) for f in sample])
    assert images.shape == (2_000, 64, 64, 3) and images.dtype == np.uint8
