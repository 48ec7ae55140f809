"""Data sets: readers of the official on-disk formats, the uint8 cache, the device loader."""
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybrezoo.data import (Augment, DeviceLoader, ImageArrays, data_root, holdout_split, load_split, open_source)
from hybrezoo.data.cache import cached
from hybrezoo.data.device_loader import crop_flip, cutout, normalize
from hybrezoo.data.synthetic import write_fake_cifar100, write_fake_tinyimagenet
from hybrezoo.errors import HybrezooError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    write_fake_cifar100(path, train_per_class=3, test_per_class=1)
    write_fake_tinyimagenet(path, train_per_class=1, val_per_class=1)
    return path


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def test_cifar100_reads_the_official_pickle_layout(root, cache):
    train = load_split("cifar100", "train", root, cache_dir=cache)
    test = load_split("c100", "test", root, cache_dir=cache)
    assert train.images.shape == (300, 32, 32, 3) and train.images.dtype == np.uint8
    assert len(test) == 100 and train.num_classes == 100
    assert train.classes[:2] == ["class_000", "class_001"]
    with open(root / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f)
    # data rows are channel-major (1024 R, 1024 G, 1024 B): pixel (row 3, col 5) of image 7
    row = raw["data"][7]
    assert tuple(train.images[7, 3, 5]) == (row[3 * 32 + 5], row[1024 + 3 * 32 + 5], row[2048 + 3 * 32 + 5])
    assert train.labels.tolist() == raw["fine_labels"]


def test_cifar100_reads_python2_byte_keys(tmp_path):
    write_fake_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    with open(path, "rb") as f:
        raw = pickle.load(f)
    with open(path, "wb") as f:  # the official files have bytes keys when read with encoding="bytes"
        pickle.dump({k.encode(): v for k, v in raw.items()}, f)
    data = load_split("cifar100", "train", tmp_path, use_cache=False)
    assert data.labels.tolist() == raw["fine_labels"]


def test_tinyimagenet_follows_wnids_order(root, cache):
    wnids = (root / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    assert wnids != sorted(wnids)  # the fake data set lists classes out of sorted order on purpose
    train = load_split("tinyimagenet", "train", root, cache_dir=cache)
    val = load_split("tin", "val", root, cache_dir=cache)
    assert train.classes == wnids and train.images.shape == (200, 64, 64, 3)
    assert train.labels.tolist() == list(range(200))  # one image per class, read in wnids.txt order
    annotations = [line.split("\t") for line in
                   (root / "tiny-imagenet-200/val/val_annotations.txt").read_text().splitlines()]
    assert val.labels.tolist() == [wnids.index(a[1]) for a in annotations]
    assert train.descriptions[wnids[3]] == "thing number 3"


def test_missing_or_incomplete_folders_say_what_is_expected(tmp_path, monkeypatch):
    monkeypatch.delenv("HYBREZOO_DATA", raising=False)
    with pytest.raises(HybrezooError, match="no data folder given: pass --data"):
        data_root(None)
    with pytest.raises(HybrezooError, match="does not exist"):
        data_root(tmp_path / "nowhere")
    with pytest.raises(HybrezooError,
                       match=r"CIFAR-100 not found.*cifar-100-python/\{train,test,meta\}.*cs.toronto.edu"):
        open_source("cifar100", tmp_path)
    write_fake_tinyimagenet(tmp_path, classes=200)
    victim = sorted((tmp_path / "tiny-imagenet-200" / "train").iterdir())[0]
    shutil.rmtree(victim)
    with pytest.raises(HybrezooError, match=r"incomplete.*1 of 200 classes.*cs231n"):
        open_source("tinyimagenet", tmp_path)
    monkeypatch.setenv("HYBREZOO_DATA", str(tmp_path))
    assert data_root(None) == tmp_path


def test_download_only_for_cifar(tmp_path, monkeypatch):
    with pytest.raises(HybrezooError, match="only available for CIFAR-100"):
        open_source("tinyimagenet", tmp_path, download=True)
    monkeypatch.delenv("HYBREZOO_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HybrezooError, match="--download needs a folder to download into: pass --data"):
        open_source("cifar100", None, download=True)
    assert not list(tmp_path.iterdir())                     # nothing written into the working directory


def test_damaged_files_are_one_error_line_naming_the_file(tmp_path):
    write_fake_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    test_file = tmp_path / "cifar-100-python" / "test"
    test_file.write_bytes(test_file.read_bytes()[:100])     # truncated
    with pytest.raises(HybrezooError, match=r"cifar-100-python/test is empty, truncated or not a CIFAR-100") as err:
        load_split("cifar100", "test", tmp_path, use_cache=False)
    test_file.write_bytes(b"")
    with pytest.raises(HybrezooError, match="is empty, truncated"):
        load_split("cifar100", "test", tmp_path, use_cache=False)
    assert "\n" not in str(err.value)
    write_fake_tinyimagenet(tmp_path, train_per_class=1, val_per_class=1)
    image = sorted((tmp_path / "tiny-imagenet-200" / "val" / "images").iterdir())[0]
    image.write_bytes(b"not a jpeg")
    with pytest.raises(HybrezooError, match=f"{image.name} is not a readable image.*unpack"):
        load_split("tinyimagenet", "val", tmp_path, use_cache=False)


def test_cache_hits_then_invalidates_when_the_source_changes(root, tmp_path):
    source = open_source("cifar100", root)
    calls = []

    def decode():
        calls.append(1)
        return source.read("test")

    first, path, hit = cached("cifar100", "test", source.source_files("test"), decode, tmp_path)
    again, path2, hit2 = cached("cifar100", "test", source.source_files("test"), decode, tmp_path)
    assert (hit, hit2, len(calls), path2) == (False, True, 1, path)
    assert np.array_equal(first.images, again.images) and first.classes == again.classes
    # a changed source file (new mtime) gives a new key; the stale cache file is removed
    test_file = root / "cifar-100-python" / "test"
    st = os.stat(test_file)
    os.utime(test_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, path3, hit3 = cached("cifar100", "test", source.source_files("test"), decode, tmp_path)
    assert (hit3, len(calls)) == (False, 2) and path3 != path
    assert sorted(p.name for p in tmp_path.iterdir()) == [path3.name]  # no stale file, no temp file


def test_corrupt_cache_is_rebuilt(root, tmp_path):
    source = open_source("cifar100", root)
    _, path, _ = cached("cifar100", "test", source.source_files("test"), lambda: source.read("test"), tmp_path)
    path.write_bytes(b"not a zip")
    data, _, hit = cached("cifar100", "test", source.source_files("test"), lambda: source.read("test"), tmp_path)
    assert not hit and len(data) == 100


def _arrays(n=40, size=8, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return ImageArrays(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                       np.arange(n) % classes, [f"c{i}" for i in range(classes)])


def test_holdout_is_stratified_disjoint_and_seeded():
    data = _arrays(n=400, classes=4)
    data.images[:, 0, 0, 0] = np.arange(400) % 256  # make images identifiable
    data.images[:, 0, 0, 1] = np.arange(400) // 256
    train, held = holdout_split(data, 0.1, seed=3)
    assert len(held) == 40 and len(train) == 360
    assert np.bincount(held.labels).tolist() == [10, 10, 10, 10]
    ids = lambda d: set((d.images[:, 0, 0, 0].astype(int) + 256 * d.images[:, 0, 0, 1].astype(int)).tolist())
    assert ids(train).isdisjoint(ids(held)) and len(ids(train) | ids(held)) == 400
    assert np.array_equal(holdout_split(data, 0.1, seed=3)[1].labels, held.labels)
    assert holdout_split(data, 0, seed=0)[1] is None
    small = _arrays(n=200, classes=100)                  # 2 images a class, 40 held out: not 0
    rest, held = holdout_split(small, 40, seed=0)
    assert len(held) == 40 and len(rest) == 160 and np.bincount(held.labels, minlength=100).max() == 1
    with pytest.raises(ValueError, match="data.holdout"):
        holdout_split(data, 400, seed=0)


def test_crop_flip_matches_pad_then_slice():
    x = torch.randint(0, 256, (6, 8, 8, 3), dtype=torch.uint8)
    offsets = torch.randint(0, 9, (6, 2))
    flips = torch.tensor([0, 1, 0, 1, 1, 0], dtype=torch.bool)
    out = crop_flip(x, offsets, flips, padding=4)
    padded = F.pad(x.permute(0, 3, 1, 2), (4, 4, 4, 4))
    for i in range(6):
        r, c = offsets[i].tolist()
        ref = padded[i, :, r:r + 8, c:c + 8]
        if flips[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i].permute(2, 0, 1), ref)


def test_normalize_gives_channels_last_floats_and_cutout_erases_a_square():
    x = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    mean = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    std = torch.tensor([2.0, 4.0, 8.0]).view(1, 3, 1, 1)
    y = normalize(x, mean, std)
    assert y.shape == (2, 3, 8, 8) and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, (x.permute(0, 3, 1, 2).float() - mean) / std)
    assert normalize(x, mean, std, channels_last=False).is_contiguous()
    erased = cutout(torch.ones(2, 3, 8, 8), torch.tensor([[4, 4], [0, 7]]), size=4)
    assert erased[0, :, 2:6, 2:6].eq(0).all() and erased[0].eq(0).sum() == 3 * 16
    assert erased[1, :, 0:2, 5:8].eq(0).all() and erased[1].eq(0).sum() == 3 * 6  # clipped at the border


def test_train_loader_is_a_function_of_seed_and_epoch_and_drops_the_last_partial_batch():
    data = _arrays(n=42)
    kw = dict(batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, augment=Augment(crop_padding=2, cutout=3))
    a, b = DeviceLoader(data, seed=1, **kw), DeviceLoader(data, seed=1, **kw)
    assert len(a) == 5
    first = [x for x, _ in a]
    assert all(torch.equal(x, y) for x, (y, _) in zip(first, b))
    a.set_epoch(1)
    assert not torch.equal(next(iter(a))[0], first[0])
    seen = torch.cat([y for _, y in DeviceLoader(_arrays(n=40), seed=1, **kw)])
    assert sorted(seen.tolist()) == sorted((np.arange(40) % 4).tolist())  # every image once per epoch


def test_ddp_shards_make_up_the_single_process_batches():
    """The recipe's batch is the global batch: 2 ranks see exactly the halves of the 1-process batches."""
    data = _arrays(n=48)
    kw = dict(batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, seed=5)
    single = list(DeviceLoader(data, **kw))
    ranks = [list(DeviceLoader(data, rank=r, world_size=2, **kw)) for r in (0, 1)]
    for step, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][step][0], ranks[1][step][0]]), x)
        assert torch.equal(torch.cat([ranks[0][step][1], ranks[1][step][1]]), y)
    with pytest.raises(ValueError, match="divisible by the 3 processes"):
        DeviceLoader(data, rank=0, world_size=3, **kw)


def test_eval_loader_covers_every_image_once_across_ranks():
    data = _arrays(n=37)
    kw = dict(batch_size=5, mean=(0.5,) * 3, std=(0.25,) * 3)
    labels = [torch.cat([y for _, y in DeviceLoader(data, rank=r, world_size=3, **kw)]) for r in range(3)]
    assert sum(len(t) for t in labels) == 37
    single = torch.cat([x for x, _ in DeviceLoader(data, **kw)])
    assert single.shape == (37, 3, 8, 8)
    # unaugmented: exactly the normalised images, in order
    ref = (torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    assert torch.allclose(single, ref, atol=1e-5)


def test_batch_larger_than_split_is_refused():
    with pytest.raises(ValueError, match="lower data.batch_size"):
        DeviceLoader(_arrays(n=4), batch_size=8, mean=(0,) * 3, std=(1,) * 3, train=True)
