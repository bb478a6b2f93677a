"""One worker of tests/test_multiworker.py (run as a script, TF_CONFIG set by the test).

ECQx quantization-aware training of a tiny MLP under MultiWorkerMirroredStrategy; writes the
worker's final state (indices, relevances, float kernels) to an .npz and checks that the indices
equal the reference assignment of the final kernels and stored relevances.

Usage: python multiworker_worker.py OUT.npz SCENARIO
SCENARIO: "agree" (workers get different callback seeds; the chief's is used),
          "diverge" (worker 1 perturbs its relevances: every worker must stop with
          WorkersDisagreeError).
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import ecqx_tf  # noqa: E402
from ecqx_tf import assign  # noqa: E402
from ecqx_tf.keras.api import ecq_layers  # noqa: E402
from ecqx_tf.keras.multiworker import WorkersDisagreeError  # noqa: E402


def main(out_path: str, scenario: str) -> int:
    task = int(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = np.random.default_rng(0)
    x = rng.random((128, 20), dtype=np.float32)
    y = rng.integers(0, 4, 128)
    Lambda = 0.1
    with strategy.scope():
        tf.keras.utils.set_random_seed(0)
        i = tf.keras.Input((20,))
        h = tf.keras.layers.Dense(32, activation="relu", name="d1")(i)
        o = tf.keras.layers.Dense(4, name="d2")(h)
        q = ecqx_tf.quantize(tf.keras.Model(i, o), bits=4, method="ecqx", Lambda=Lambda, p=0.1, relevance_data=(x[:64], y[:64]))
        q.compile(tf.keras.optimizers.Adam(1e-2), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = ecqx_tf.ECQxCallback(relevance_batch_size=16, seed=11 + 1000 * task)  # seeds differ on purpose
    if scenario == "diverge" and task == 1:
        original = cb._relevances

        def perturbed():
            return {k: v * np.float32(1.001) + np.float32(1e-6) for k, v in original().items()}

        cb._relevances = perturbed
    try:
        q.fit(x, y, epochs=2, batch_size=32, shuffle=False, callbacks=[cb], verbose=0)
    except WorkersDisagreeError as e:
        print("DISAGREE", str(e).splitlines()[0], flush=True)
        return 3
    slots = ecq_layers(q)
    n_largest = max(s.kernel.numpy().size for s in slots)
    state = {}
    for s in slots:
        w, c = s.kernel.numpy(), s.centroids.numpy()
        idx, rel = s.indices.numpy(), s.relevance.numpy()
        lam = assign.layer_lambda(w, c, s.config.Lambda, w.size, n_largest)
        if not np.array_equal(idx, assign.ecqx_assign(w, c, lam, rel, p=s.config.p)):
            print("NOT_PURE", s.name, flush=True)
            return 4
        state[f"{s.name}/indices"], state[f"{s.name}/relevance"], state[f"{s.name}/kernel"] = idx, rel, w
    np.savez(out_path, refreshes=cb.refreshes, **state)
    print("WORKER_OK", task, cb.refreshes, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
