"""The trainers' data loaders and the PNG writer, in-process (no training)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from mlkit.train.data import epoch_batches, load_images, stratified_split  # noqa: E402
from mlkit.train.png import encode_png, image_grid, read_png, write_png  # noqa: E402


def test_digits_stratified_split_in_unit_range():
    d = load_images("digits", seed=0)
    assert d.shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_val) == 1797 and abs(len(d.x_val) - 360) <= 5
    assert d.x_train.min() >= -1 and d.x_train.max() <= 1
    # every class keeps its share in the held-out split
    val_counts = torch.bincount(d.y_val, minlength=10)
    assert val_counts.min() >= 34 and val_counts.max() <= 37
    assert not set(map(tuple, d.x_val.flatten(1).tolist())) & set(
        map(tuple, d.x_train[:50].flatten(1).tolist())
    )


def test_digits_resized_for_the_gan():
    d = load_images("digits", image_size=16, val_fraction=0.0)
    assert d.shape == (1, 16, 16) and len(d.x_train) == 1797 and len(d.x_val) == 0


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW"])
def test_npz_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 12, 12, 3) if layout != "NHW" else (40, 12, 12), dtype=np.uint8)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    y = np.arange(40) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_images(str(tmp_path / "d.npz"), val_fraction=0.2)
    assert d.shape == ((1, 12, 12) if layout == "NHW" else (3, 12, 12))
    assert d.num_classes == 4 and len(d.x_val) == 8  # 2 of each class
    assert d.x_train.min() >= -1 and d.x_train.max() <= 1


def test_npz_missing_arrays_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(KeyError, match="expected arrays 'x' and 'y'"):
        load_images(str(tmp_path / "bad.npz"))


def _make_class_folders(root):
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
    return root


def test_class_folders_without_pillow_say_what_to_do(tmp_path):
    try:
        import PIL  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs Pillow.*npz"):
            load_images(str(_make_class_folders(tmp_path / "imgs")))
    else:
        pytest.skip("Pillow is installed; see test_class_folders_with_pillow")


def test_class_folders_with_pillow(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    root = _make_class_folders(tmp_path / "imgs")
    for i in range(6):
        for c in ("cat", "dog"):
            Image.fromarray(np.full((10, 10, 3), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    d = load_images(str(root), channels=3, image_size=8, val_fraction=0.5)
    assert d.shape == (3, 8, 8) and d.num_classes == 2 and len(d.x_train) == 6


def test_synthetic_any_shape():
    d = load_images("synthetic", image_size=32, channels=3, num_classes=7, synthetic_size=500)
    assert d.shape == (3, 32, 32) and d.num_classes == 7 and len(d.x_train) + len(d.x_val) == 500


def test_unknown_data_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="expected 'digits', 'synthetic'"):
        load_images("/no/such/thing")


def test_epoch_batches_shard_one_permutation_across_ranks():
    n, b = 100, 10
    ranks = [torch.cat(list(epoch_batches(n, b, epoch=3, seed=1, rank=r, world_size=2))) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 50
    assert sorted(torch.cat(ranks).tolist()) == list(range(n))  # disjoint, covering
    again = torch.cat(list(epoch_batches(n, b, epoch=3, seed=1, rank=0, world_size=2)))
    assert torch.equal(again, ranks[0])  # deterministic


def test_stratified_split_is_seeded():
    y = torch.arange(100) % 5
    assert all(
        torch.equal(a, b)
        for a, b in zip(stratified_split(y, 0.2, 7), stratified_split(y, 0.2, 7), strict=True)
    )


def test_png_round_trip_and_crc(tmp_path):
    grey = np.arange(12 * 7, dtype=np.uint8).reshape(12, 7)
    rgb = np.random.default_rng(0).integers(0, 256, (5, 9, 3), dtype=np.uint8)
    for img in (grey, rgb):
        path = write_png(tmp_path / "a.png", img)
        assert np.array_equal(read_png(path), img)
    data = encode_png(grey)
    ihdr = data[12:29]  # type + 13-byte header
    assert int.from_bytes(data[29:33], "big") == zlib.crc32(ihdr)


def test_image_grid_layout():
    imgs = np.zeros((10, 1, 8, 8), np.float32)
    imgs[3] = 1.0  # one white image
    grid = image_grid(imgs, nrow=4, pad=2, scale=2)
    assert grid.shape == (3 * 18 + 2, 4 * 18 + 2)
    assert grid[2:18, 2 + 3 * 18 : 18 + 3 * 18].min() == 255  # row 0, column 3
    assert image_grid(np.zeros((2, 3, 4, 4)), nrow=2).shape == (8, 14, 3)


# ---------------------------------------------------------------- the RNN's text loading
@pytest.fixture(scope="module")
def rnn(request):
    return request.getfixturevalue("project_module")("rnn", "train")


def test_stdlib_corpus_is_real_python_and_fixed(rnn):
    text = rnn.stdlib_corpus()
    assert 1_000_000 < len(text) < 20_000_000
    assert b"def " in text and b"import " in text
    assert text == rnn.stdlib_corpus()  # sorted: the same bytes every time


def test_text_file_and_synthetic_corpus(rnn, tmp_path):
    (tmp_path / "t.txt").write_text("hello world\n" * 500)
    args = rnn.parse_args(["--data", str(tmp_path / "t.txt"), "--seq-len", "16"])
    assert rnn.load_corpus(args) == b"hello world\n" * 500
    args = rnn.parse_args(["--data", "synthetic", "--synthetic-size", "5000"])
    text = rnn.load_corpus(args)
    assert len(text) == 5000 and set(text) <= set(range(97, 123)) | {32}
    with pytest.raises(ValueError, match="too little"):
        (tmp_path / "small.txt").write_text("x")
        rnn.load_corpus(rnn.parse_args(["--data", str(tmp_path / "small.txt")]))


def test_get_batch_targets_are_inputs_shifted(rnn):
    data = torch.arange(200, dtype=torch.uint8)
    x, y = rnn.get_batch(data, 4, 16)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_unigram_loss(rnn):
    uniform = torch.arange(256, dtype=torch.uint8).repeat(40)
    assert rnn.unigram_loss(uniform, uniform) == pytest.approx(np.log(256), rel=1e-3)
    skewed = torch.tensor([65] * 1000 + [66] * 10, dtype=torch.uint8)
    assert rnn.unigram_loss(skewed, skewed) < 0.5
