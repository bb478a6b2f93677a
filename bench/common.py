"""Measurements and training paths shared by the benchmark scripts ``bench/compare.py`` and
``bench/frontier.py`` (a helper module of ``bench/``, not part of the package): integer-stream
statistics (lzma, the project's arithmetic coder), the real TFLM interpreter's outputs, TFLite
conversion and TFLM LUT compression, the FantastIC4 blob, the tfmot prune -> cluster -> PCQAT
path, the ECQ/ECQx export, and the machine/version record of a run.
"""
from __future__ import annotations

import contextlib
import gc
import lzma
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from firmware_export.entropy_coding import as_matrix, coded_bytes  # noqa: E402  (NumPy only)

__all__ = [
    "BATCH", "LR", "LZMA_PRESET", "lzma_bytes", "stream_stats", "float_stream_stats", "tflite_weights",
    "tflm_logits", "accuracy", "copy_model", "fit", "keras_accuracy", "quiet_native", "convert_int",
    "convert_float", "lut_compress_all", "is_fc_only", "kernels", "f4_blob", "pcqat", "ecq_tflite",
    "machine_info", "versions", "PCQAT_CLUSTERS", "pcqat_clusters", "cluster_sparse", "MLP_SIZES", "mlp_weights", "wide_mlp",
]

LZMA_PRESET = 9 | lzma.PRESET_EXTREME
#: The scaling benchmarks' MLPs 784-h1-h2-10 (``bench/scale.py``, ``bench/ecqx_overhead.py``):
#: name -> hidden widths (h1, h2); the name is the number of weights, outputs included.
MLP_SIZES: Dict[str, Tuple[int, int]] = {
    "0.23M": (256, 128),  # 234,752 weights (the demo's MLP)
    "1M": (1024, 192),  # 1,001,344
    "4M": (2048, 1200),  # 4,075,232
    "16M": (4096, 3120),  # 16,021,984
}
LR = 1e-3
BATCH = 64


def lzma_bytes(data: bytes) -> int:
    """Length of ``data`` compressed with xz/lzma at preset 9e."""
    return len(lzma.compress(bytes(data), preset=LZMA_PRESET))


def _entropy(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0


def stream_stats(layers: Sequence[np.ndarray]) -> Dict[str, Any]:
    """Statistics of the stored weight integers, one array per layer (TFLite layout).

    Returns zeros (fraction), entropy (bits/weight of the values pooled over all layers, as
    ``ecqx_tf.layer_stats``' total), the zeroth-order entropy bound in bytes (sum over layers of
    ``n_l * H_l / 8``), lzma bytes of the int8 stream (layers concatenated), per-layer zeros and
    distinct values.
    """
    flat = [np.asarray(a).reshape(-1) for a in layers]
    allv = np.concatenate(flat)
    if allv.size and (allv.min() < -128 or allv.max() > 127):
        raise ValueError(f"weight integers out of int8 range [{allv.min()}, {allv.max()}]")
    return {
        "weights": int(allv.size),
        "sparsity": float(np.mean(allv == 0)),
        "entropy": _entropy(allv),
        "entropy_bound_bytes": float(sum(a.size * _entropy(a) for a in flat) / 8),
        "lzma_weight_bytes": lzma_bytes(allv.astype(np.int8).tobytes()),
        "cabac_weight_bytes": coded_bytes([as_matrix(np.asarray(a)) for a in layers])[0],
        "layer_sparsity": [float(np.mean(a == 0)) for a in flat],
        "layer_distinct": [int(np.unique(a).size) for a in flat],
    }


def float_stream_stats(kernels: Sequence[np.ndarray]) -> Dict[str, Any]:
    flat = [np.asarray(k, np.float32).reshape(-1) for k in kernels]
    allv = np.concatenate(flat)
    return {
        "weights": int(allv.size),
        "sparsity": float(np.mean(allv == 0)),
        "entropy": None,
        "entropy_bound_bytes": None,
        "lzma_weight_bytes": lzma_bytes(allv.tobytes()),
        "layer_sparsity": [float(np.mean(a == 0)) for a in flat],
        "layer_distinct": [int(np.unique(a).size) for a in flat],
    }


def tflite_weights(model_bytes: bytes) -> Dict[str, Any]:
    """Stored weight integers (LUT-decoded when compressed), bias bytes, scale count and weight
    types of every FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D op."""
    from firmware_export.tflm import flatbuffer as fb

    m = fb.read_model(model_bytes)
    ints, types, bias_bytes, scales = [], [], 0, 0
    for op, t in fb.weight_tensors(m):
        ints.append(m.constant_values(t.index))
        types.append(t.dtype if t.is_constant else f"{t.dtype} (LUT)")
        scales += 0 if t.quantization is None else int(np.size(t.quantization.scale))
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = m.tensors[op.inputs[2]]
            bias_bytes += int(b.size * 4)
    return {"ints": ints, "types": types, "bias_bytes": bias_bytes, "scales": scales, "ops": m.op_set(), "parsed": m}


def tflm_logits(model_bytes: bytes, x: np.ndarray) -> Dict[str, Any]:
    """Outputs of the real TFLM interpreter on every sample (float or int8 input, quantized with
    the model's input parameters as ``firmware_export.tflm.convert.quantize_input``), and the
    minimum arena found by bisection (``firmware_export.tflm.arena``)."""
    from tflite_micro import runtime

    from firmware_export.tflm.arena import arena_sizes
    from firmware_export.tflm.convert import dequantize_output, quantize_input

    minimum, recommended = arena_sizes(model_bytes)
    it = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=recommended)
    det = it.get_input_details(0)
    shape = tuple(int(d) for d in det["shape"])
    if np.dtype(det["dtype"]) == np.int8:
        xi = quantize_input(model_bytes, x)
    else:
        xi = np.asarray(x, np.float32)
    outs = []
    for i in range(len(xi)):
        it.set_input(xi[i].reshape(shape), 0)
        it.invoke()
        outs.append(np.array(it.get_output(0), copy=True).reshape(-1))
    y = np.stack(outs)
    if y.dtype == np.int8:
        y = dequantize_output(model_bytes, y)
    return {"logits": y, "arena_bytes": int(minimum), "arena_recommended": int(recommended)}


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(y).reshape(-1)))



def copy_model(model):
    import tensorflow as tf

    m = tf.keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    return m


def fit(model, data, epochs: int, seed: int, callbacks=()) -> List[float]:
    """Adam(1e-3), batch 64, shuffled, sparse CE on logits (as quantize_and_train); seconds/epoch."""
    import tensorflow as tf

    from ecqx_tf.keras.finetune import EpochTimer
    from models.train import op_determinism

    tf.keras.utils.set_random_seed(seed)
    model.compile(optimizer=tf.keras.optimizers.Adam(LR),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    timer = EpochTimer()
    with op_determinism():
        model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=BATCH, shuffle=True, verbose=0,
                  callbacks=[timer, *callbacks])
    return timer.seconds


def keras_accuracy(model, data) -> float:
    logits = model.predict(data.x_test, batch_size=256, verbose=0)
    return accuracy(logits, data.y_test)


@contextlib.contextmanager
def quiet_native():
    """Silence what TensorFlow's C++ converter prints on fd 1/2 ("fully_quantize: 0, ...");
    Python exceptions still carry the error."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)


def convert_int(model, rep: np.ndarray) -> bytes:
    """tf.keras (QAT) model -> full-integer .tflite (int8 input/output), as the exporter converts."""
    import tensorflow as tf

    from firmware_export.tflm.convert import convert_full_int8

    with quiet_native():
        return convert_full_int8(tf.lite.TFLiteConverter.from_keras_model(model), rep)


def convert_float(model) -> bytes:
    import tensorflow as tf

    with quiet_native():
        return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def lut_compress_all(model_bytes: bytes) -> bytes:
    """LUT-compress every weight tensor with the fewest index bits its value tables need."""
    from firmware_export.tflm import flatbuffer as fb
    from firmware_export.tflm.compress import lut_compress

    m = fb.read_model(model_bytes)
    targets = []
    for op, t in fb.weight_tensors(m):
        v = t.values()
        q = t.quantization
        if q is not None and q.scale.size > 1:
            distinct = max(np.unique(s).size for s in np.moveaxis(v, q.axis, 0))
        else:
            distinct = np.unique(v).size
        targets.append((t.index, max(1, math.ceil(math.log2(max(distinct, 2))))))
    return lut_compress(model_bytes, targets)


def is_fc_only(model) -> bool:
    import tensorflow as tf

    return not any(isinstance(l, (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D)) for l in model.layers)


def kernels(model) -> List[np.ndarray]:
    import tensorflow as tf

    return [l.kernel.numpy() for l in model.layers if isinstance(l, (tf.keras.layers.Dense, tf.keras.layers.Conv2D))]


def mlp_weights(h1: int, h2: int) -> int:
    """Weights of the MLP 784-h1-h2-10 (kernels only)."""
    return 784 * h1 + h1 * h2 + h2 * 10


def wide_mlp(h1: int, h2: int, float_epochs: int, seed: int = 0):
    """The scaling benchmarks' float MLP 784-h1-h2-10 (layers ``fc1``, ``fc2``, ``logits``; ReLU),
    trained ``float_epochs`` epochs (Adam 1e-3, batch 64; 0 = the seeded initial weights) on the
    bundled MNIST train split. Returns ``(model, x, y)``: the model and the flattened split."""
    import tensorflow as tf

    from models.datasets import load

    ds = load("mnist_bundled")
    x = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float32)
    y = ds.y_train
    tf.keras.utils.set_random_seed(seed)
    i = tf.keras.Input((784,))
    h = tf.keras.layers.Dense(h1, activation="relu", name="fc1")(i)
    h = tf.keras.layers.Dense(h2, activation="relu", name="fc2")(h)
    model = tf.keras.Model(i, tf.keras.layers.Dense(10, name="logits")(h))
    if float_epochs:
        model.compile(tf.keras.optimizers.Adam(LR), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=BATCH, epochs=float_epochs, verbose=0)
    return model, x, y


def machine_info() -> Dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        usable = os.cpu_count()
    return {"platform": platform.platform(), "processor": cpu, "cpus_usable": usable, "cpu_count": os.cpu_count(),
            "memory_bytes": mem, "python": platform.python_version(), "load_average_at_start": os.getloadavg()}


def versions() -> Dict[str, Any]:
    """Installed versions of everything that shapes the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out: Dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    for pkg in ("tensorflow", "tensorflow-model-optimization", "tf-keras", "tflite-micro", "numpy", "innvestigate",
                "matplotlib", "scikit-learn", "mlxtend", "ecqx-tf"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out




def f4_blob(model_bytes: bytes, layout: str = "smallest") -> bytes:
    """The FantastIC4 blob of an integer MLP ``.tflite`` (``"smallest"``: the smallest layout
    per layer, the export default; or one of ``dense4``/``bitmap``/``cer``/``csc`` for all)."""
    from firmware_export.fantastic4 import format as f4format
    from firmware_export.fantastic4.network import IntegerMLP

    return f4format.write_blob(IntegerMLP.from_tflite(model_bytes), layout)


#: Clusters per layer of the PCQAT path (4-bit cluster indices).
PCQAT_CLUSTERS = 16


def pcqat_clusters(kernel: np.ndarray, clusters: int = PCQAT_CLUSTERS) -> int:
    """The largest cluster count <= ``clusters`` that tfmot's sparsity-preserving k-means++ can
    initialise on ``kernel``. tfmot keeps one centroid at zero and splits the other k - 1 between
    the negative and the positive weights in proportion to their counts (``round``, half to even,
    for the negative side); k-means++ then needs at least as many weights as centroids on each
    side, and raises otherwise (``Expected num_to_sample <= points.rows()``). A layer pruned to a
    handful of non-zero weights (LeNet-5's first convolution, 150 weights, at 95% zeros) cannot
    take 16 clusters; with fewer it loses nothing, as it has at most that many distinct values."""
    w = np.asarray(kernel).ravel()
    neg, pos = int(np.sum(w < 0)), int(np.sum(w > 0))
    if neg + pos == 0:
        return clusters
    for k in range(clusters, 1, -1):
        n_neg = int(np.round((k - 1) * (neg / (neg + pos))))
        if n_neg <= neg and k - 1 - n_neg <= pos:
            return k
    return 1


def cluster_sparse(pruned):
    """tfmot's sparsity-preserving k-means++ clustering of ``pruned`` (wrapped, to be trained):
    ``cluster_weights(pruned, 16, KMEANS_PLUS_PLUS, preserve_sparsity=True)``; when a layer has
    too few non-zero weights for 16 clusters, each layer gets its :func:`pcqat_clusters`."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    cl = tfmot.clustering.keras
    params = dict(cluster_centroids_init=cl.CentroidInitialization.KMEANS_PLUS_PLUS, preserve_sparsity=True)
    counts = {l.name: pcqat_clusters(l.kernel.numpy()) for l in pruned.layers if hasattr(l, "kernel")}
    if all(k == PCQAT_CLUSTERS for k in counts.values()):
        return cl.cluster_weights(pruned, number_of_clusters=PCQAT_CLUSTERS, **params)
    # as cluster_weights(model) does: the wrapper wraps the pruned layer itself (its weights), the
    # other layers are taken over as they are
    return tf.keras.models.clone_model(
        pruned, clone_function=lambda l: cl.cluster_weights(l, number_of_clusters=counts[l.name], **params)
        if l.name in counts else l)


def pcqat(float_model, data, sparsity: float, epochs: Sequence[int], seed: int) -> Tuple[Any, List[float]]:
    """tfmot's collaborative optimization from ``float_model`` (not modified): magnitude pruning to
    ``sparsity`` (``PolynomialDecay`` from 0, ending at 70% of the pruning stage's steps, 4 updates
    per epoch) for ``epochs[0]`` epochs -> 16-cluster weight clustering with sparsity preserved
    (k-means++; a layer left with too few non-zero weights for 16 gets :func:`pcqat_clusters`)
    for ``epochs[1]`` -> cluster- and sparsity-preserving QAT
    (``Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)``) for ``epochs[2]``.
    Every stage trains as :func:`fit`. Returns the QAT model and the seconds of every epoch."""
    import tensorflow_model_optimization as tfmot

    e_prune, e_cluster, e_qat = (int(e) for e in epochs)
    steps_per_epoch = math.ceil(len(data.x_train) / BATCH)
    sp = tfmot.sparsity.keras
    schedule = sp.PolynomialDecay(initial_sparsity=0.0, final_sparsity=float(sparsity), begin_step=0,
                                  end_step=max(1, int(0.7 * steps_per_epoch * e_prune)),
                                  frequency=max(1, steps_per_epoch // 4))
    pruned = sp.prune_low_magnitude(copy_model(float_model), pruning_schedule=schedule)
    secs = fit(pruned, data, e_prune, seed, callbacks=[sp.UpdatePruningStep()])
    pruned = sp.strip_pruning(pruned)

    cl = tfmot.clustering.keras
    clustered = cluster_sparse(pruned)
    secs += fit(clustered, data, e_cluster, seed)
    clustered = cl.strip_clustering(clustered)

    q = tfmot.quantization.keras
    scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    annotated = q.quantize_annotate_model(clustered)
    with q.quantize_scope():
        qat = q.quantize_apply(annotated, scheme=scheme)
    secs += fit(qat, data, e_qat, seed)
    del pruned, clustered
    gc.collect()
    return qat, secs


def ecq_tflite(ft, data, name: str, lut: bool = True) -> Tuple[bytes, Optional[bytes], List[str]]:
    """The ECQ/ECQx result ``ft`` (:class:`ecqx_tf.keras.finetune.FinetuneResult`) exported with
    ``firmware_export.tflm.convert`` (stored integers = the assigned levels, checked by the
    exporter): the plain flatbuffer, the LUT-compressed one (None if it could not be made) and
    notes on what could not be made."""
    from ecqx_tf import quantization_info
    from firmware_export.registry import ExportRequest
    from firmware_export.tflm.convert import convert

    notes: List[str] = []
    req = ExportRequest(model=ft.stripped, quant=quantization_info(ft.qmodel), name=name,
                        representative=data.x_train[:500], x_test=data.x_test, y_test=data.y_test)
    with quiet_native():
        plain = convert(req, compress=False).model_bytes
    lut_bytes = None
    if lut:
        try:
            with quiet_native():
                lut_bytes = convert(req, compress=True).model_bytes
        except Exception as e:
            notes.append(f"LUT export not measured: {type(e).__name__}: {e}")
    return plain, lut_bytes, notes
