"""Model zoo (models/zoo.py) and float training (models/train.py)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from cli.train import main
from models import datasets, zoo
from models.datasets import Dataset
from models.train import TrainResult, op_determinism, save_model_atomic, train_float

# (name, input_shape, num_classes): a small input for every registered model
CASES = {
    "kws_mlp": ((49, 10, 1), 12),
    "mnist_mlp": ((28, 28, 1), 10),
    "lenet5": ((28, 28, 1), 10),
    "vgg_small": ((32, 32, 3), 10),
    "resnet20": ((32, 32, 3), 10),
    "ds_cnn": ((49, 10, 1), 12),
    "mobilenet_v1_025": ((96, 96, 3), 2),
    "resnet8": ((32, 32, 3), 10),
    "fc_autoencoder": ((640,), 640),
    "sensor_cnn1d": ((128, 9), 6),
}

#: the models added with the MLPerf Tiny networks (their one-step test uses the small variant)
NEW = ("ds_cnn", "mobilenet_v1_025", "resnet8", "fc_autoencoder", "sensor_cnn1d")

# small variants (size options, tiny inputs) for the training tests
SMALL = {
    "kws_mlp": ((6, 4, 1), 3, {}),
    "mnist_mlp": ((6, 6, 1), 3, {}),
    "lenet5": ((12, 12, 1), 3, {}),
    "vgg_small": ((8, 8, 1), 3, {"stages": (4,), "dense": 6}),
    "resnet20": ((8, 8, 2), 3, {"filters": 4, "blocks": 1}),
    "ds_cnn": ((13, 6, 1), 4, {"filters": 6, "blocks": 1}),
    "mobilenet_v1_025": ((16, 16, 3), 2, {"alpha": 0.0625, "blocks": 2}),
    "resnet8": ((12, 12, 3), 3, {"filters": 4}),
    "fc_autoencoder": ((24,), 24, {"width": 8, "bottleneck": 3, "depth": 2}),
    "sensor_cnn1d": ((16, 3), 3, {"filters": (4, 6)}),
}


def _weights_equal(a, b) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


def _trainable_count(model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


@pytest.fixture(scope="module")
def small_mnist() -> Dataset:
    d = datasets.load("mnist_bundled")
    return Dataset("mnist_small", d.x_train[:512], d.y_train[:512], d.x_test[:128], d.y_test[:128],
                   num_classes=10)


def test_every_registered_model_is_covered():
    assert sorted(CASES) == zoo.names()


# ---------------------------------------------------------------------------------------------
# zoo


@pytest.mark.parametrize("name", sorted(CASES))
def test_builds_outputs_logits_and_one_step_changes_weights(name):
    shape, classes, size = SMALL[name] if name in NEW else CASES[name] + ({},)
    model = zoo.build(name, shape, classes, seed=0, **size)
    assert model.name == name
    assert tuple(model.input_shape[1:]) == shape
    assert tuple(model.output_shape) == (None, classes)
    if name == "fc_autoencoder":  # reconstructs its input
        assert classes == shape[0]
    last = model.layers[-1]
    assert isinstance(last, tf.keras.layers.Dense) and last.activation is tf.keras.activations.linear
    assert last.name.startswith("dense_")
    names = [layer.name for layer in model.layers]
    assert len(set(names)) == len(names)
    assert names == [layer.name for layer in zoo.build(name, shape, classes, seed=0, **size).layers]

    rng = np.random.default_rng(0)
    x = rng.random((4, *shape), dtype=np.float32)
    y = np.arange(4) % classes
    before = [w.copy() for w in model.get_weights()]
    model.compile(tf.keras.optimizers.Adam(1e-3),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, y)
    after = model.get_weights()
    kernels = [i for i, w in enumerate(model.weights) if "kernel" in w.name]
    assert kernels and all(not np.array_equal(before[i], after[i]) for i in kernels)


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_seed_same_init_different_seed_different(name):
    shape, classes, size = SMALL[name] if name in NEW else CASES[name] + ({},)
    a = zoo.build(name, shape, classes, seed=3, **size)
    b = zoo.build(name, shape, classes, seed=3, **size)
    c = zoo.build(name, shape, classes, seed=4, **size)
    assert _weights_equal(a, b)
    assert not _weights_equal(a, c)


def test_param_counts():
    assert zoo.build("mnist_mlp", (28, 28, 1), 10).count_params() == 235_146
    assert zoo.build("kws_mlp", (49, 10, 1), 12).count_params() == 260_364
    assert zoo.build("lenet5", (28, 28, 1), 10).count_params() == 61_706
    vgg = zoo.build("vgg_small", (32, 32, 3), 10)
    assert (_trainable_count(vgg), vgg.count_params()) == (551_018, 551_914)
    r = zoo.build("resnet20", (32, 32, 3), 10)
    trainable = _trainable_count(r)
    assert (trainable, r.count_params()) == (272_474, 274_042)
    # MLPerf Tiny reference networks (Banbury et al. 2021): exact parameter counts
    assert zoo.build("ds_cnn", (49, 10, 1), 12).count_params() == 24_908
    assert zoo.build("mobilenet_v1_025", (96, 96, 3), 2).count_params() == 221_794
    assert zoo.build("resnet8", (32, 32, 3), 10).count_params() == 78_666
    assert zoo.build("fc_autoencoder", (640,), 640).count_params() == 269_992
    assert zoo.build("sensor_cnn1d", (128, 9), 6).count_params() == 14_358
    # He et al. 2016 report 0.27M for option A (zero-padding shortcuts). Our option B differs
    # only by the two projection shortcuts (1x1 conv + BN gamma/beta):
    projections = sum(
        _trainable_count(layer) for layer in r.layers if "shortcut" in layer.name
    )
    assert projections == 16 * 32 + 32 * 64 + 2 * (32 + 64)
    assert trainable - projections == 269_722
    assert abs(trainable - 270_000) / 270_000 < 0.01
    assert sum(isinstance(layer, tf.keras.layers.Add) for layer in r.layers) == 9
    assert sum(isinstance(layer, tf.keras.layers.Conv2D) for layer in r.layers) == 19 + 2


def test_build_errors():
    with pytest.raises(ValueError, match="accepted: ds_cnn, fc_autoencoder, kws_mlp, lenet5, mnist_mlp, mobilenet_v1_025, "
                                         "resnet20, resnet8, sensor_cnn1d, vgg_small"):
        zoo.build("mlp9000", (28, 28, 1), 10)
    with pytest.raises(ValueError, match=r"lenet5.*at least 12x12.*\(8, 8, 1\)"):
        zoo.build("lenet5", (8, 8, 1), 10)
    with pytest.raises(ValueError, match=r"resnet20.*\(height, width, channels\).*\(784,\)"):
        zoo.build("resnet20", (784,), 10)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2, got 1"):
        zoo.build("mnist_mlp", (28, 28, 1), 1)
    with pytest.raises(ValueError, match=r"dimensions must be >= 1.*\(28, 0, 1\)"):
        zoo.build("mnist_mlp", (28, 0, 1), 10)
    with pytest.raises(TypeError, match="input_shape must be a tuple or list"):
        zoo.build("mnist_mlp", 784, 10)
    with pytest.raises(TypeError, match="num_classes must be an int"):
        zoo.build("mnist_mlp", (784,), 10.0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        zoo.build("mnist_mlp", (784,), 10, seed=-1)
    with pytest.raises(ValueError, match=r"model 'ds_cnn' has no size option\(s\) \['width'\]; accepted: \['blocks', 'filters'\]"):
        zoo.build("ds_cnn", (49, 10, 1), 12, width=3)
    with pytest.raises(ValueError, match="option filters must be >= 1, got 0"):
        zoo.build("resnet8", (32, 32, 3), 10, filters=0)
    with pytest.raises(ValueError, match="num_classes .* must equal the input size 640, got 10"):
        zoo.build("fc_autoencoder", (640,), 10)
    with pytest.raises(ValueError, match=r"'sensor_cnn1d' takes \(timesteps, channels\)"):
        zoo.build("sensor_cnn1d", (128, 9, 1), 6)
    assert zoo.options("mobilenet_v1_025") == {"alpha": 0.25, "blocks": 13}


# ---------------------------------------------------------------------------------------------
# training


def test_training_is_reproducible_and_saved_model_round_trips(small_mnist, tmp_path):
    kw = dict(epochs=2, batch_size=64, verbose=0, patience=3)
    r1 = train_float("mnist_mlp", small_mnist, seed=0, out_dir=tmp_path / "a", **kw)
    r2 = train_float("mnist_mlp", small_mnist, seed=0, **kw)
    r3 = train_float("mnist_mlp", small_mnist, seed=1, **kw)
    assert isinstance(r1, TrainResult)
    assert r1.epochs_run == 2 and r1.seed == 0 and r1.param_count == 235_146
    assert set(r1.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    # training moved the weights away from the seeded initialization
    init = zoo.build("mnist_mlp", small_mnist.input_shape, 10, seed=0)
    assert not _weights_equal(r1.model, init)
    assert _weights_equal(r1.model, r2.model)
    assert r1.history == r2.history and r1.test_accuracy == r2.test_accuracy
    assert not _weights_equal(r1.model, r3.model)

    # model.keras loads back with identical predictions; metrics.json matches the result
    assert r1.paths == {"model": tmp_path / "a" / "model.keras", "metrics": tmp_path / "a" / "metrics.json"}
    loaded = tf.keras.models.load_model(r1.paths["model"])
    x = small_mnist.x_test
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), r1.model.predict(x, verbose=0))
    metrics = json.loads(r1.paths["metrics"].read_text())
    assert metrics["test_accuracy"] == r1.test_accuracy and metrics["seed"] == 0
    assert metrics["epochs_run"] == 2 and metrics["param_count"] == 235_146
    assert sorted(os.listdir(tmp_path / "a")) == ["metrics.json", "model.keras"]  # no temp files left


def test_mlp_flattens_any_input_shape():
    # kws_mlp is meant for (49, 10, 1) speech features but flattens whatever it gets
    r = train_float("kws_mlp", "digits", epochs=1, verbose=0, seed=0)
    assert r.model.input_shape == (None, 8, 8, 1) and r.model.output_shape == (None, 10)
    assert r.paths == {} and r.epochs_run == 1


def test_op_determinism_is_restored():
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    with op_determinism(True):
        assert tf_config.is_op_determinism_enabled()
    assert tf_config.is_op_determinism_enabled() == before


def test_save_model_atomic_rejects_other_suffix(tmp_path):
    with pytest.raises(ValueError, match="must end with '.keras'"):
        save_model_atomic(zoo.build("mnist_mlp", (4,), 2, seed=0), tmp_path / "m.h5")


def test_train_errors(small_mnist, tmp_path):
    with pytest.raises(ValueError, match="unknown zoo model 'nope'; accepted: ds_cnn, fc_autoencoder, kws_mlp, lenet5"):
        train_float("nope", small_mnist)
    with pytest.raises(ValueError, match="unknown data set 'nope'; accepted: .*mnist_bundled"):
        train_float("mnist_mlp", "nope")
    with pytest.raises(ValueError, match=r"model 'lenet5' does not fit data set 'digits'.*12x12"):
        train_float("lenet5", "digits", epochs=1, verbose=0)
    with pytest.raises(ValueError, match="'digits' is bundled and takes no path"):
        train_float("mnist_mlp", "digits", data_path=tmp_path)
    with pytest.raises(ValueError, match=r"'cifar10' is read from disk: pass .*--data-path"):
        train_float("mnist_mlp", "cifar10")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        train_float("mnist_mlp", small_mnist, epochs=0)
    with pytest.raises(ValueError, match=r"validation_split must be in \[0, 1\), got 1.0"):
        train_float("mnist_mlp", small_mnist, validation_split=1.0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="output folder .*file/out"):
        train_float("mnist_mlp", small_mnist, out_dir=blocker / "out")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder modes")
def test_unwritable_out_folder_by_mode(small_mnist, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="is not writable"):
            train_float("mnist_mlp", small_mnist, out_dir=ro / "out")
    finally:
        ro.chmod(0o700)


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_end_to_end_on_digits(tmp_path, capsys):
    out = tmp_path / "float"
    rc = main(["--model", "mnist_mlp", "--data", "digits", "--epochs", "2", "--out", str(out),
               "--seed", "0", "--batch-size", "64", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mnist_mlp on digits: test accuracy" in printed and "model.keras" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "mnist_mlp" and metrics["data"] == "digits"
    assert metrics["seed"] == 0 and metrics["epochs_run"] == 2
    assert metrics["param_count"] == 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    model = tf.keras.models.load_model(out / "model.keras")
    assert model.output_shape == (None, 10)


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--model", "nope", "--data", "digits", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err
    for name in zoo.names():
        assert name in err

    assert main(["--model", "lenet5", "--data", "digits", "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "does not fit data set 'digits'" in capsys.readouterr().err

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--model", "mnist_mlp", "--data", "digits", "--out", str(blocker / "out")]) == 2
    assert f"output folder '{blocker / 'out'}'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# ECQ and ECQx training of every zoo model (small variants)


def test_small_variants_cover_the_zoo():
    assert sorted(SMALL) == zoo.names()


def _pure_indices_match(qmodel, Lambda, p, method):
    import ecqx_tf
    from ecqx_tf import assign
    from ecqx_tf.keras.api import ecq_layers

    slots = ecq_layers(qmodel)
    n_largest = max(s.kernel.numpy().size for s in slots)
    for s in slots:
        w, c = s.kernel.numpy(), s.centroids.numpy()
        lam = assign.layer_lambda(w, c, Lambda, w.size, n_largest)
        want = assign.ecqx_assign(w, c, lam, s.relevance.numpy(), p=p) if method == "ecqx" else assign.ecq_assign(w, c, lam)
        np.testing.assert_array_equal(s.indices.numpy(), want, err_msg=s.name)
    plain = ecqx_tf.strip(qmodel)
    for qk in ecqx_tf.quantization_info(qmodel).values():
        np.testing.assert_array_equal(getattr(plain.get_layer(qk.layer), qk.kernel).numpy(), qk.values())
    return len(slots)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_zoo_model_trains_with_ecq_and_ecqx(name):
    """quantize + fit (2 steps) + ECQxCallback with ECQ and with ECQx; afterwards the stored indices
    are the pure assignment (ecq_assign / ecqx_assign) of the final float kernels and relevances, and
    the stripped kernels are the centroids. The autoencoder gets its relevance from x alone."""
    import ecqx_tf

    shape, classes, size = SMALL[name]
    model = zoo.build(name, shape, classes, seed=0, **size)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16,) + shape).astype(np.float32)
    if name == "fc_autoencoder":
        y, rdata, loss = x, x, "mse"
    else:
        y = rng.integers(0, classes, 16)
        rdata, loss = (x, y), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for method in ("ecq", "ecqx"):
        q = ecqx_tf.quantize(model, bits=4, method=method, Lambda=0.1, p=0.1,
                             relevance_data=rdata if method == "ecqx" else None)
        q.compile(tf.keras.optimizers.Adam(1e-3), loss)
        cb = ecqx_tf.ECQxCallback(relevance_batch_size=8)
        q.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[cb])
        assert cb.refreshes == 2
        assert _pure_indices_match(q, 0.1, 0.1, method) >= 2
