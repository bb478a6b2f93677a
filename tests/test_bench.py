"""Benchmark helpers: callgrind instruction counts (bench/instructions.py) behave as counts of the
work done, and bench/compare.py's table shows them. Behaviour only; no timing."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from firmware_export.fantastic4 import format as F  # noqa: E402
from firmware_export.fantastic4 import simulate as S  # noqa: E402
from firmware_export.fantastic4.network import IntegerDense, IntegerMLP  # noqa: E402

needs_valgrind = pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("gcc") is None,
                                    reason="valgrind and gcc are needed for instruction counts")


def _net(zero_fraction: float, seed: int = 0) -> IntegerMLP:
    rng = np.random.default_rng(seed)

    def layer(name, n_out, n_in, zp_in, zp_out):
        w = rng.integers(-7, 8, size=(n_out, n_in)).astype(np.int8)
        w[rng.random(w.shape) < zero_fraction] = 0
        return IntegerDense(name, w, rng.integers(-2000, 2000, n_out).astype(np.int32), zp_in, zp_out,
                            1518500250, -8, zp_out, 127)

    return IntegerMLP([layer("l1", 48, 96, -128, -128), layer("l2", 10, 48, -128, 3)])


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from bench import instructions

    if instructions.available():
        pytest.skip(instructions.available())
    return instructions.build_f4_host(tmp_path_factory.mktemp("host") / "f4_host")


@needs_valgrind
def test_f4_counts_are_deterministic_per_inference_and_follow_the_nonzeros(host, tmp_path):
    from bench import instructions

    x = np.random.default_rng(1).integers(-128, 128, size=(3, 96)).astype(np.int8)
    dense_blob = F.write_blob(_net(0.0), "cer")
    sparse_blob = F.write_blob(_net(0.9), "cer")
    # the counted binary computes what the simulator computes
    assert np.array_equal(instructions.f4_outputs(sparse_blob, x, host, tmp_path), S.run(sparse_blob, x))
    one = instructions.f4_instructions(dense_blob, np.repeat(x[:1], 3, axis=0), host, tmp_path)
    again = instructions.f4_instructions(dense_blob, np.repeat(x[:1], 3, axis=0), host, tmp_path)
    assert one == again and one > 0
    assert one == instructions.f4_instructions(dense_blob, x[:1], host, tmp_path)  # per inference: / N
    sparse = instructions.f4_instructions(sparse_blob, x[:1], host, tmp_path)
    # CER visits only non-zero weights: 10% of them should cost well under half the instructions
    assert sparse < 0.5 * one


@needs_valgrind
def test_tflm_count_is_positive_and_deterministic(tmp_path):
    pytest.importorskip("tflite_micro")
    from bench import instructions

    tflite = pytest.importorskip("tests.test_fantastic4").snapped_mlp_tflite([16, 8, 4], seed=3)
    x = np.random.default_rng(0).integers(-128, 128, size=(2, 16)).astype(np.int8)
    a = instructions.tflm_instructions(tflite, x, 64 * 1024, tmp_path)
    b = instructions.tflm_instructions(tflite, x, 64 * 1024, tmp_path)
    assert a == b and a > 100


def test_callgrind_failure_is_reported(tmp_path):
    from bench import instructions

    if shutil.which("valgrind") is None:
        pytest.skip("valgrind not installed")
    with pytest.raises(RuntimeError, match="callgrind failed"):
        instructions.callgrind([str(tmp_path / "does_not_exist")], tmp_path / "cg.out")


def test_compare_table_shows_instruction_columns_in_thousands():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_compare", REPO / "bench" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    row = compare._new_row("m", "ecqx", "ECQX 4-bit L=0.3", acc_keras=0.9, ir_tflm=3_317_566.0, ir_f4=595_272.4,
                           ir_f4_cer=None)
    text = compare.format_table([row])
    header, _, line = text.splitlines()
    assert "kIr TFLM" in header and "kIr F4" in header and "kIr CER" in header
    cells = line.split()
    assert "3,318" in cells and "595" in cells
    md = compare.format_table([row], markdown=True).splitlines()
    assert md[2].count("|") == md[0].count("|")


def test_instruction_table_ratio_is_best_f4_over_tflm_int8():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_compare2", REPO / "bench" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    rows = [compare._new_row("m", "int8", "tfmot int8 QAT", acc_tflm=0.9, sparsity=0.01, ir_tflm=2_000_000.0),
            compare._new_row("m", "ecq", "ECQ 4-bit", acc_tflm=0.9, sparsity=0.8, ir_tflm=3_000_000.0,
                             ir_f4=900_000.0, ir_f4_cer=600_000.0, ir_f4_csc=250_000.0),
            compare._new_row("n", "ecq", "ECQ 2-bit", ir_tflm=1_000.0, ir_f4=10.0),  # no int8 row: no ratio
            compare._new_row("m", "ecq", "not counted")]
    lines = compare.format_instructions(rows).splitlines()
    assert len(lines) == 2 + 3
    assert lines[3].split()[-1] == "0.125"  # 250,000 / 2,000,000
    assert lines[4].split()[-1] == "-" and lines[2].split()[-1] == "-"
    assert "not counted" not in "\n".join(lines)


@pytest.mark.parametrize("neg,pos", [(3, 5), (4, 4), (0, 9), (1, 30), (7, 8), (20, 20), (2, 13)])
def test_pcqat_clusters_is_what_tfmot_kmeans_plus_plus_accepts(neg, pos):
    """bench.common.pcqat_clusters gives the largest count tfmot's sparsity-preserving k-means++
    initialises on a kernel: that count works, one more raises (when below 16)."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.clustering.keras.clustering_centroids import (
        KmeansPlusPlusCentroidsInitialisation,
    )

    from bench.common import pcqat_clusters

    rng = np.random.default_rng(neg * 100 + pos)
    w = np.zeros(150, np.float32)
    w[:neg] = -rng.uniform(0.1, 1.0, neg)
    w[neg:neg + pos] = rng.uniform(0.1, 1.0, pos)
    w = rng.permutation(w).reshape(5, 5, 1, 6)
    k = pcqat_clusters(w)

    def init(n):
        return KmeansPlusPlusCentroidsInitialisation(tf.constant(w), n, preserve_sparsity=True).get_cluster_centroids()

    assert init(k).shape == (k,)
    if k < 16:
        with pytest.raises(tf.errors.InvalidArgumentError, match="num_to_sample"):
            init(k + 1)
    assert k == 16 or neg + pos < 16 or min(neg, pos) < 8


def test_cluster_sparse_takes_a_layer_with_few_non_zeros():
    """A model whose first convolution keeps 8 non-zero weights (LeNet-5's at 95% zeros): tfmot's
    cluster_weights(model, 16) raises; bench.common.cluster_sparse clusters that layer with
    pcqat_clusters of it and the others with 16, keeping every zero and every other weight's layer."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    from bench.common import cluster_sparse, pcqat_clusters

    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([tf.keras.Input((12, 12, 1)), tf.keras.layers.Conv2D(6, 5, name="c1"),
                             tf.keras.layers.Flatten(), tf.keras.layers.Dense(10, name="d")])
    k, b = m.get_layer("c1").get_weights()
    keep = np.zeros(k.size, bool)
    keep[[3, 17, 40, 41, 77, 90, 120, 149]] = True
    k = np.where(keep.reshape(k.shape), k, 0).astype(np.float32)
    k[k.nonzero()] = np.abs(k[k.nonzero()]) * np.array([1, -1, 1, 1, -1, 1, 1, -1])
    m.get_layer("c1").set_weights([k, b])
    cl = tfmot.clustering.keras
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_to_sample"):
        cl.cluster_weights(m, number_of_clusters=16, cluster_centroids_init=cl.CentroidInitialization.KMEANS_PLUS_PLUS,
                           preserve_sparsity=True)
    clustered = cluster_sparse(m)
    stripped = cl.strip_clustering(clustered)
    kc = stripped.get_layer("c1").get_weights()[0]
    assert np.array_equal(kc == 0, k == 0)  # sparsity preserved
    assert len(np.unique(kc)) <= pcqat_clusters(k) < 16
    kd = stripped.get_layer("d").get_weights()[0]
    assert len(np.unique(kd)) <= 16 and pcqat_clusters(m.get_layer("d").get_weights()[0]) == 16
