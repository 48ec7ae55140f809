"""The CIFAR-100 reader on the real data: the development environment's shared/data/cifar-100 sheets
(found beside or above the checkout), written into the official python layout by their own
``unpack.py`` in a temporary folder; skipped where they are absent, as on a user's machine."""
import subprocess
import sys

import numpy as np
import pytest

from hybrezoo.data import load_split

from conftest import shared_data

SHEETS = shared_data("cifar-100")


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    if SHEETS is None or not (SHEETS / "unpack.py").is_file():
        pytest.skip("no CIFAR-100 sheets: shared/data/cifar-100 is not beside or above this checkout "
                    "(real-data test of the development environment)")
    root = tmp_path_factory.mktemp("cifar")
    subprocess.run([sys.executable, str(SHEETS / "unpack.py"), str(root)], check=True, capture_output=True,
                   timeout=600)
    return root


def test_real_cifar100_counts_class_order_and_statistics(cifar_root, tmp_path):
    train = load_split("cifar100", "train", cifar_root, cache_dir=tmp_path)
    test = load_split("cifar100", "test", cifar_root, cache_dir=tmp_path)
    assert train.images.shape == (50_000, 32, 32, 3) and test.images.shape == (10_000, 32, 32, 3)
    assert train.images.dtype == np.uint8
    assert np.bincount(train.labels, minlength=100).tolist() == [500] * 100
    assert np.bincount(test.labels, minlength=100).tolist() == [100] * 100
    # the official class order: fine_label_names of the meta file, alphabetical, apple .. worm
    assert train.classes == test.classes
    assert len(train.classes) == 100 and train.classes == sorted(train.classes)
    assert train.classes[:3] == ["apple", "aquarium_fish", "baby"] and train.classes[-1] == "worm"
    # the published training-set statistics (hybrezoo.data.specs normalises with them)
    mean = train.images.reshape(-1, 3).mean(axis=0) / 255
    assert np.allclose(mean, [0.5071, 0.4865, 0.4409], atol=5e-4)
