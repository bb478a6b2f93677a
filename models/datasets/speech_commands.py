"""Google Speech Commands (v0.02 layout) as the standard 12-class keyword-spotting task.

Registered as ``speech_commands``:
``datasets.load("speech_commands", path="/data/speech_commands_v0.02", features="mfcc")``.

Folder layout expected in ``path``:

* one subfolder per word (``yes/``, ``no/``, ``bed/``, ...) of 16 kHz mono 16-bit PCM ``.wav``
  files of about one second;
* ``testing_list.txt`` and ``validation_list.txt``: one relative path (``right/abc_nohash_0.wav``)
  per line; they decide the split (``testing_list.txt`` is always required,
  ``validation_list.txt`` only when ``validation != "merge"``);
* ``_background_noise_/``: long noise recordings (optional), used for the silence class.

Classes (indices in this order, as in TensorFlow's ``speech_commands`` example):
``0 _silence_, 1 _unknown_, 2 yes, 3 no, 4 up, 5 down, 6 left, 7 right, 8 on, 9 off, 10 stop,
11 go``. ``_unknown_`` holds every other word folder. ``_silence_`` clips are one-second crops of
the background-noise files at a random offset, multiplied by a random volume in [0, 1) (all zeros
when there is no ``_background_noise_`` folder or it has no wav files). The same noise files feed
both splits. Unless ``num_silence`` is given, each split gets as many silence clips as its mean
keyword class has examples.

Splits: test = files in ``testing_list.txt``. ``validation`` chooses what happens to the files
in ``validation_list.txt``: ``"merge"`` (default) adds them to train, ``"drop"`` leaves them out,
``"as_test"`` returns them as the test split instead of the testing list (for model selection).
``max_per_class`` caps every class in every split (a seeded random subset, so ``_unknown_``
still spans many words). Each split is shuffled with ``seed``.

Audio: read with :mod:`wave`; a file must be mono, 16,000 Hz, 16-bit PCM, else ``ValueError``
naming it. Samples are scaled to [-1, 1) (divided by 32768) and zero-padded or cropped at the end
to 16,000 samples.

Features (:func:`kws_features`, TensorFlow signal ops, the microcontroller KWS recipe):

============  ==========================================================================
parameter     default and meaning
============  ==========================================================================
sample_rate   16000 Hz
window_ms     30 ms -> 480-sample frames, periodic Hann window (``tf.signal.hann_window``)
stride_ms     20 ms -> 320-sample hop; 1 s gives 1 + (16000 - 480) // 320 = 49 frames
fft_length    512 (next power of two of the window), 257 bins of ``|STFT|`` (magnitude)
num_mel_bins  40 triangular mel filters (``tf.signal.linear_to_mel_weight_matrix``)
lower_hz      20 Hz, lower edge of the mel filter bank
upper_hz      4000 Hz, upper edge of the mel filter bank
log_offset    1e-6: ``logmel = log(mel + 1e-6)`` (natural log)
kind          ``"logmel"`` -> 40 bins; ``"mfcc"`` -> the first ``num_mfcc`` (10) coefficients of
              ``tf.signal.mfccs_from_log_mel_spectrograms`` (DCT-II scaled by sqrt(2 / 40))
============  ==========================================================================

Output shape ``(n, 49, 40, 1)`` for log-mel and ``(n, 49, num_mfcc, 1)`` for MFCC, float32;
labels int64. No augmentation (time shift, noise mixing) is applied: that belongs to training.
:func:`kws_features` needs eager execution and raises ``RuntimeError`` inside ``tf.function`` or
TF1 graph mode; it never changes TensorFlow's global execution mode.
"""
from __future__ import annotations

import logging
import os
import wave
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ecqx_tf.config import validate_float_range, validate_int_range

from .base import Dataset, register_dataset

__all__ = [
    "KEYWORDS",
    "SILENCE_LABEL",
    "UNKNOWN_LABEL",
    "FEATURE_KINDS",
    "VALIDATION_MODES",
    "SAMPLE_RATE",
    "CLIP_SAMPLES",
    "read_wav",
    "kws_features",
    "load_speech_commands",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

KEYWORDS: Tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
BACKGROUND_DIR = "_background_noise_"
FEATURE_KINDS: Tuple[str, ...] = ("logmel", "mfcc")
VALIDATION_MODES: Tuple[str, ...] = ("merge", "drop", "as_test")
SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
_BATCH = 512  # clips per TensorFlow call in kws_features, bounds peak memory


# --------------------------------------------------------------------------------------- audio
def read_wav(path: PathLike, num_samples: Optional[int] = CLIP_SAMPLES) -> np.ndarray:
    """Read a mono 16 kHz 16-bit PCM wav file as float32 in [-1, 1).

    Args:
        path: the ``.wav`` file.
        num_samples: zero-pad or crop (at the end) to this length; ``None`` keeps all samples.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: naming the file: not a RIFF/WAVE PCM file, not mono, not 16,000 Hz, not
            16-bit, or data shorter than its header says.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"wav file not found: {path!r}")
    try:
        with wave.open(path, "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            nframes = w.getnframes()
            problems = []
            if channels != 1:
                problems.append(f"{channels} channels (expected mono)")
            if rate != SAMPLE_RATE:
                problems.append(f"{rate} Hz (expected {SAMPLE_RATE})")
            if width != 2:
                problems.append(f"{8 * width}-bit samples (expected 16-bit PCM)")
            if problems:
                raise ValueError(f"wav file {path!r} has the wrong format: {', '.join(problems)}")
            raw = w.readframes(nframes)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"wav file {path!r} is not a valid PCM wav file: {e}") from e
    if len(raw) != 2 * nframes:
        raise ValueError(
            f"wav file {path!r} is truncated: header says {nframes} samples, data holds "
            f"{len(raw) // 2}"
        )
    audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / np.float32(32768.0)
    if num_samples is not None:
        audio = _fit(audio, num_samples)
    return audio


def _fit(audio: np.ndarray, n: int) -> np.ndarray:
    if len(audio) >= n:
        return audio[:n]
    return np.pad(audio, (0, n - len(audio)))


# ------------------------------------------------------------------------------------ features
def kws_features(
    audio: np.ndarray,
    kind: str = "logmel",
    *,
    sample_rate: int = SAMPLE_RATE,
    window_ms: float = 30.0,
    stride_ms: float = 20.0,
    fft_length: Optional[int] = None,
    num_mel_bins: int = 40,
    lower_hz: float = 20.0,
    upper_hz: float = 4000.0,
    num_mfcc: int = 10,
    log_offset: float = 1e-6,
) -> np.ndarray:
    """Keyword-spotting features of a batch of clips (see the module docstring for the recipe).

    .. math::
        S_{t,f} = \\left|\\sum_{n} w_n\\, a_{tH + n}\\, e^{-2\\pi i f n / N_{fft}}\\right|,\\quad
        L_{t,m} = \\log\\Big(\\sum_f S_{t,f} M_{f,m} + \\epsilon\\Big),\\quad
        C_{t,k} = \\sqrt{2/B}\\sum_m L_{t,m}\\cos\\frac{\\pi k (2m+1)}{2B}

    with the periodic Hann window :math:`w`, hop :math:`H`, mel matrix :math:`M` and
    :math:`B` mel bins.

    Args:
        audio: float array ``[n, samples]`` with values in [-1, 1] (``n`` may be 0).
        kind: ``"logmel"`` or ``"mfcc"``.
        sample_rate: Hz.
        window_ms, stride_ms: frame length and hop in milliseconds.
        fft_length: FFT size; ``None`` means the next power of two of the window length.
        num_mel_bins, lower_hz, upper_hz: mel filter bank.
        num_mfcc: coefficients kept for ``"mfcc"`` (1..num_mel_bins).
        log_offset: added before the natural log.

    Returns:
        float32 ``[n, frames, num_mel_bins or num_mfcc, 1]`` with
        ``frames = 1 + (samples - window) // stride``.

    Raises:
        ValueError: for a bad ``kind``, parameter or audio shape/range.
        RuntimeError: when TensorFlow is not executing eagerly (inside ``tf.function`` or
            TF1 graph mode).
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FEATURE_KINDS)}; got {kind!r}")
    validate_int_range("sample_rate", sample_rate, low=1)
    validate_float_range("window_ms", window_ms, low=0, low_open=True)
    validate_float_range("stride_ms", stride_ms, low=0, low_open=True)
    validate_int_range("num_mel_bins", num_mel_bins, low=1)
    validate_float_range("log_offset", log_offset, low=0, low_open=True)
    if not 0 <= lower_hz < upper_hz <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= lower_hz < upper_hz <= sample_rate / 2 = {sample_rate / 2}; got "
            f"lower_hz={lower_hz!r}, upper_hz={upper_hz!r}"
        )
    if kind == "mfcc" and (
        isinstance(num_mfcc, bool) or not isinstance(num_mfcc, int)
        or not 1 <= num_mfcc <= num_mel_bins
    ):
        raise ValueError(f"num_mfcc must be an int in 1..{num_mel_bins}, got {num_mfcc!r}")
    window = int(round(sample_rate * window_ms / 1000.0))
    stride = int(round(sample_rate * stride_ms / 1000.0))
    if window < 2 or stride < 1:
        raise ValueError(
            f"window_ms={window_ms!r} and stride_ms={stride_ms!r} at {sample_rate} Hz give "
            f"{window} and {stride} samples; need at least 2 and 1"
        )
    if fft_length is None:
        fft_length = 1 << (window - 1).bit_length()
    if isinstance(fft_length, bool) or not isinstance(fft_length, int) or fft_length < window:
        raise ValueError(f"fft_length must be an int >= the window ({window}), got {fft_length!r}")

    audio = np.asarray(audio)
    if audio.ndim != 2 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(
            f"audio must be a float array of shape [n, samples], got {audio.dtype.name} of shape "
            f"{audio.shape}"
        )
    if audio.shape[1] < window:
        raise ValueError(
            f"audio clips have {audio.shape[1]} samples, fewer than one {window}-sample window"
        )
    if audio.size and not (np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1.0):
        raise ValueError("audio must be finite with values in [-1, 1]")

    import tensorflow as tf

    if not tf.executing_eagerly():
        raise RuntimeError(
            "kws_features needs eager execution; call it outside tf.function and TF1 graph mode"
        )
    frames = 1 + (audio.shape[1] - window) // stride
    width = num_mel_bins if kind == "logmel" else num_mfcc
    out = np.empty((audio.shape[0], frames, width, 1), np.float32)
    mel = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=num_mel_bins,
        num_spectrogram_bins=fft_length // 2 + 1,
        sample_rate=sample_rate,
        lower_edge_hertz=float(lower_hz),
        upper_edge_hertz=float(upper_hz),
    )
    for start in range(0, audio.shape[0], _BATCH):
        chunk = tf.constant(audio[start:start + _BATCH], dtype=tf.float32)
        stft = tf.signal.stft(
            chunk, frame_length=window, frame_step=stride, fft_length=fft_length,
            window_fn=tf.signal.hann_window, pad_end=False,
        )
        log_mel = tf.math.log(tf.tensordot(tf.abs(stft), mel, 1) + log_offset)
        if kind == "mfcc":
            feats = tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :num_mfcc]
        else:
            feats = log_mel
        out[start:start + _BATCH, ..., 0] = feats.numpy()
    return out


# -------------------------------------------------------------------------------------- loader
def _read_list(folder: str, name: str) -> set:
    p = os.path.join(folder, name)
    if not os.path.isfile(p):
        raise FileNotFoundError(
            f"Speech Commands folder {folder!r} has no {name!r}; expected the v0.02 split list "
            "(one relative wav path per line) there"
        )
    with open(p, "r", encoding="utf-8") as f:
        return {line.strip().replace("\\", "/") for line in f if line.strip()}


def _noise_clips(folder: str) -> List[np.ndarray]:
    noise_dir = os.path.join(folder, BACKGROUND_DIR)
    if not os.path.isdir(noise_dir):
        return []
    return [
        read_wav(os.path.join(noise_dir, n), num_samples=None)
        for n in sorted(os.listdir(noise_dir)) if n.lower().endswith(".wav")
    ]


def _silence(noise: List[np.ndarray], count: int, rng: np.random.Generator) -> np.ndarray:
    clips = np.zeros((count, CLIP_SAMPLES), np.float32)
    if not noise:
        return clips
    for i in range(count):
        src = noise[int(rng.integers(len(noise)))]
        offset = int(rng.integers(max(len(src) - CLIP_SAMPLES, 0) + 1))
        clips[i] = _fit(src[offset:offset + CLIP_SAMPLES], CLIP_SAMPLES) * np.float32(rng.random())
    return clips


@register_dataset("speech_commands")
def load_speech_commands(
    path: PathLike,
    features: str = "logmel",
    *,
    num_mfcc: int = 10,
    validation: str = "merge",
    max_per_class: Optional[int] = None,
    num_silence: Optional[int] = None,
    keywords: Sequence[str] = KEYWORDS,
    seed: int = 0,
) -> Dataset:
    """Speech Commands as the 12-class KWS task (see the module docstring).

    Args:
        path: the extracted ``speech_commands_v0.02`` folder.
        features: ``"logmel"`` (49 x 40) or ``"mfcc"`` (49 x ``num_mfcc``).
        num_mfcc: MFCC coefficients kept when ``features="mfcc"``.
        validation: ``"merge"`` (into train), ``"drop"`` or ``"as_test"``.
        max_per_class: cap on examples per class and split (``None``: no cap).
        num_silence: silence clips per split (``None``: the mean keyword class size, capped by
            ``max_per_class``).
        keywords: the words with their own class (default: the standard ten).
        seed: drives subsetting, silence generation and shuffling.

    Raises:
        FileNotFoundError: naming the folder or missing list file.
        ValueError: for bad options, or naming a malformed wav file.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if features not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {', '.join(FEATURE_KINDS)}; got {features!r}")
    if validation not in VALIDATION_MODES:
        raise ValueError(
            f"validation must be one of {', '.join(VALIDATION_MODES)}; got {validation!r}"
        )
    for arg, value, low in (("max_per_class", max_per_class, 1), ("num_silence", num_silence, 0)):
        if value is not None:
            validate_int_range(arg, value, low=low)
    keywords = tuple(keywords) if not isinstance(keywords, str) else ()
    if not keywords or len(set(keywords)) != len(keywords) or any(
        not isinstance(k, str) or not k or k.startswith("_") for k in keywords
    ):
        raise ValueError(
            f"keywords must be distinct word folder names not starting with '_', got {keywords!r}"
        )
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Speech Commands folder not found: {folder!r}; expected one subfolder of .wav files "
            "per word, testing_list.txt, validation_list.txt and _background_noise_/"
        )
    testing = _read_list(folder, "testing_list.txt")
    validating = _read_list(folder, "validation_list.txt") if validation != "merge" else set()
    class_names = (SILENCE_LABEL, UNKNOWN_LABEL) + keywords
    index = {k: i + 2 for i, k in enumerate(keywords)}

    # split -> label -> sorted relative paths
    files: Dict[str, Dict[int, List[str]]] = {"train": {}, "test": {}}
    words = sorted(
        d for d in os.listdir(folder)
        if not d.startswith("_") and not d.startswith(".") and os.path.isdir(os.path.join(folder, d))
    )
    for word in words:
        label = index.get(word, 1)
        for name in sorted(os.listdir(os.path.join(folder, word))):
            if not name.lower().endswith(".wav"):
                continue
            rel = f"{word}/{name}"
            in_val = rel in validating
            if validation == "as_test":
                split = "test" if in_val else ("train" if rel not in testing else None)
            elif rel in testing:
                split = "test"
            else:
                split = None if (in_val and validation == "drop") else "train"
            if split is not None:
                files[split].setdefault(label, []).append(rel)
    missing = [k for k in keywords if not os.path.isdir(os.path.join(folder, k))]
    if missing:
        logger.warning("Speech Commands folder %s has no folder for keywords %s", folder, missing)

    noise = _noise_clips(folder)
    if not noise:
        logger.info("no background noise wav files in %s; silence clips are zeros", folder)
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "test"):
        chosen: List[Tuple[str, int]] = []
        for label in sorted(files[split]):
            rels = files[split][label]
            if max_per_class is not None and len(rels) > max_per_class:
                keep = np.sort(rng.choice(len(rels), max_per_class, replace=False))
                rels = [rels[i] for i in keep]
            chosen.extend((r, label) for r in rels)
        if num_silence is None:
            sizes = [sum(1 for _, lab in chosen if lab == i) for i in index.values()]
            n_sil = int(round(float(np.mean(sizes)))) if sizes else 0
        else:
            n_sil = num_silence
        if max_per_class is not None:
            n_sil = min(n_sil, max_per_class)
        silence = _silence(noise, n_sil, rng)
        items: List[Tuple[Optional[str], int]] = chosen + [(None, 0)] * n_sil
        order = rng.permutation(len(items))
        labels = np.array([items[i][1] for i in order], dtype=np.int64)
        empty = kws_features(np.zeros((0, CLIP_SAMPLES), np.float32), features, num_mfcc=num_mfcc)
        feats = np.empty((len(items),) + empty.shape[1:], np.float32)
        for start in range(0, len(items), _BATCH):  # read and featurize chunk by chunk
            idx = order[start:start + _BATCH]
            audio = np.empty((len(idx), CLIP_SAMPLES), np.float32)
            for j, i in enumerate(idx):
                rel = items[i][0]
                audio[j] = (
                    silence[i - len(chosen)] if rel is None
                    else read_wav(os.path.join(folder, *rel.split("/")))
                )
            feats[start:start + _BATCH] = kws_features(audio, features, num_mfcc=num_mfcc)
        logger.debug("Speech Commands %s: %d clips (%d silence)", split, len(labels), n_sil)
        out[split] = (feats, labels)
    return Dataset(
        "speech_commands", out["train"][0], out["train"][1], out["test"][0], out["test"][1],
        num_classes=len(class_names), class_names=class_names,
    )
