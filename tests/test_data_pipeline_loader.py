"""The file loader: batches a function of (seed, epoch), mid-epoch resume, workers, ImageNet layout,
the device-decode path (its logic on the CPU), and the one-line errors of its options."""

from __future__ import annotations

import pytest
import torch
from pipeline_jpegs import imagenet_layout, realistic_jpegs
from torchvision.io import read_file

from kdlab.data import IMAGENET_STATS, FileImageSet, build_dataset, build_loader
from kdlab.data.bad_files import BadFileLog
from kdlab.data.gpu_decode import decode_batch
from kdlab.errors import KdlabError

MEAN, STD = IMAGENET_STATS
pytestmark = [pytest.mark.shared,  # the JPEGs are made from ../shared's Tiny-ImageNet
              pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> FileImageSet:
    paths = realistic_jpegs(tmp_path_factory.mktemp("jpegs"), 10)
    return FileImageSet(tuple(paths), torch.arange(10) % 3)


def _loader(files: FileImageSet, workers: int, batch: int = 3, **kw):
    return build_loader(files, batch_size=batch, train=True, mean=MEAN, std=STD, num_workers=workers,
                        with_index=True, seed=5, **kw)


def _key(batches) -> list[tuple[list[int], torch.Tensor]]:
    return [(b.index.tolist(), b.image) for b in batches]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(i == j and torch.equal(x, y) for (i, x), (j, y) in zip(a, b))


def test_same_seed_and_epoch_same_batches_and_mid_epoch_resume(files):
    loader = _loader(files, workers=2)
    loader.set_epoch(3)
    first = _key(loader)
    loader.set_epoch(3)
    again = _key(loader)
    assert _same(first, again) and len(first) == 4
    loader.set_epoch(3, 2)  # resumed at batch 2 of epoch 3: the remaining batches, identical
    assert _same(_key(loader), first[2:])
    loader.set_epoch(4)
    other = _key(loader)
    assert [i for i, _ in other] != [i for i, _ in first]  # a new epoch reshuffles
    fresh = _loader(files, workers=0)  # no workers: the same pixels (nothing depends on a worker)
    fresh.set_epoch(3, 1)
    assert _same(_key(fresh), first[1:])


def test_a_sample_is_augmented_by_its_index_not_its_position(files):
    a, b = _loader(files, workers=0, batch=3), _loader(files, workers=0, batch=4)
    by_index = {}
    for batch in a:
        by_index.update({i: x for i, x in zip(batch.index.tolist(), batch.image)})
    seen = 0
    for batch in b:  # another batch size: other batches, other positions in them
        for i, x in zip(batch.index.tolist(), batch.image):
            assert torch.equal(by_index[i], x)
            seen += 1
    assert seen == 10


def test_imagenet_layout_loads_through_build_dataset(tmp_path):
    root = imagenet_layout(tmp_path / "imagenet", classes=3, train=4, val=2)
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(p.name for p in (root / "val").iterdir())
    data = build_dataset("imagenet", tmp_path, val_fraction=0)  # found under <root>/imagenet too
    assert isinstance(data.train, FileImageSet) and data.train.mode == "resized_crop"
    assert (len(data.train), len(data.test), data.num_classes, data.image_size) == (12, 6, 3, (224, 224))
    assert data.classes == sorted(p.name for p in (root / "train").iterdir())
    train = build_loader(data.train, batch_size=5, train=True, mean=MEAN, std=STD, num_workers=2)
    test = build_loader(data.test, batch_size=4, train=False, mean=MEAN, std=STD, num_workers=0)
    xs = [b.image for b in train]
    assert [x.shape[0] for x in xs] == [5, 5, 2] and xs[0].shape[1:] == (3, 224, 224)
    ys = torch.cat([b.target for b in test])
    assert torch.equal(ys, data.test.targets) and ys.tolist() == [0, 0, 1, 1, 2, 2]
    small = build_dataset("imagenet", root, val_fraction=0, image_size=112)
    assert next(iter(build_loader(small.test, batch_size=2, train=False, mean=MEAN, std=STD,
                                  num_workers=0))).image.shape == (2, 3, 112, 112)


def test_imagenet_images_of_one_size_keep_the_resized_crop_pipeline(tmp_path):
    """Places365-like folders (every image 256x256 there) are not decoded into a fixed-size tensor."""
    root = imagenet_layout(tmp_path / "places", classes=2, train=2, val=1, sizes=[(96, 72)])
    for name in ("imagenet", "places365"):
        data = build_dataset(name, root, val_fraction=0)
        assert isinstance(data.train, FileImageSet) and data.train.mode == "resized_crop"
        assert data.image_size == (224, 224)


def test_device_decode_batch_logic_on_cpu(files):
    """data.decode=gpu's batch function, run with device=cpu: same crops as torchvision on tensors."""
    from torchvision.io import decode_jpeg
    from torchvision.transforms.v2 import functional as TF

    paths = list(files.paths[:3])
    datas = [read_file(p) for p in paths]
    boxes = torch.tensor([[10, 20, 200, 150], [0, 0, 375, 500], [50, 60, 100, 120]])
    flips = torch.tensor([False, True, False])
    log = BadFileLog("skip")
    out, source = decode_batch(datas, boxes, flips, paths, crop=(224, 224), device=torch.device("cpu"), log=log)
    assert source == [0, 1, 2] and out.shape == (3, 3, 224, 224) and log.count == 0
    for k in range(3):
        ref = TF.resized_crop(decode_jpeg(datas[k]), *boxes[k].tolist(), [224, 224], antialias=True)
        assert torch.equal(out[k], ref.flip(-1) if flips[k] else ref)
    broken = [datas[0], datas[1][: len(datas[1]) // 3], datas[2]]  # the middle one truncated
    out2, source2 = decode_batch(broken, boxes, flips, paths, crop=(224, 224), device=torch.device("cpu"), log=log)
    assert source2 == [0, 2, 2] and torch.equal(out2[1], out2[2]) and log.count == 1 and paths[1] in log.files
    with pytest.raises(KdlabError, match=f"unreadable image file {paths[1]}"):
        decode_batch(broken, boxes, flips, paths, crop=(224, 224), device=torch.device("cpu"),
                     log=BadFileLog("error"))


def test_device_decode_loader_path_on_cpu_equals_the_worker_path(files, monkeypatch):
    """The whole data.decode=gpu path (workers read bytes, the batch is decoded in the main process),
    run on the CPU: the same crops and flips as the worker-decode path, pixel for pixel."""
    import kdlab.data.loader as loader_module

    monkeypatch.setattr(loader_module, "check_decode", lambda decode, device: None)
    full = FileImageSet(files.paths, files.targets, reduced_decode=False)
    a = _key(_loader(full, workers=2, decode="gpu"))
    b = _key(_loader(full, workers=0, decode="cpu"))
    assert _same(a, b)
    ev = build_loader(full, batch_size=4, train=False, mean=MEAN, std=STD, num_workers=0, decode="gpu")
    x = torch.cat([batch.image for batch in ev])
    y = torch.cat([batch.image for batch in build_loader(full, batch_size=4, train=False, mean=MEAN, std=STD,
                                                         num_workers=0)])
    assert x.shape == y.shape == (10, 3, 224, 224)
    assert (x - y).abs().mean() < 0.05  # eval box rounded to whole pixels on the device path


@pytest.mark.parametrize(("kw", "message"), [
    ({"decode": "gpu"}, "data.decode=gpu needs a CUDA device"),
    ({"decode": "dali"}, "data.decode=dali is not supported"),
    ({"decode": "fast"}, "data.decode must be one of cpu, gpu; got 'fast'"),
    ({"prefetch": -1}, "data.prefetch must be an integer >= 0"),
])
def test_option_errors_are_one_line(files, kw, message):
    if kw.get("decode") == "gpu" and torch.cuda.is_available():
        pytest.skip("CUDA is available here: data.decode=gpu is valid")
    with pytest.raises(KdlabError, match=message) as e:
        _loader(files, workers=0, **kw)
    assert "\n" not in str(e.value)


def test_prefetch_and_pinning_do_not_change_batches(files):
    base = _key(_loader(files, workers=0, prefetch=0))
    assert _same(_key(_loader(files, workers=0, prefetch=3, pin_memory=False, persistent_workers=False)), base)


def test_channels_last_batches_hold_the_same_values(files):
    """Workers stack channels-last for a channels-last model; the values are those of contiguous batches."""
    base = list(_loader(files, workers=0))
    for workers in (0, 2):
        cl = list(_loader(files, workers=workers, channels_last=True))
        assert [b.index.tolist() for b in cl] == [b.index.tolist() for b in base]
        for a, b in zip(cl, base):
            assert a.image.is_contiguous(memory_format=torch.channels_last) and b.image.is_contiguous()
            assert torch.equal(a.image, b.image)
