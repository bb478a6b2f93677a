"""The context-adaptive arithmetic coder of weight integers: exact round trips, size near the
entropy bound, and clear errors."""
import numpy as np
import pytest

from firmware_export.entropy_coding import as_matrix, coded_bytes, decode_layer, encode_layer


def entropy_bytes(k):
    _, c = np.unique(k, return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum() * k.size / 8)


@pytest.mark.parametrize("shape,p_zero,seed", [((20, 30), 0.8, 0), ((1, 50), 0.0, 1), ((7,), 0.5, 2),
                                               ((5, 3, 3, 2), 0.9, 3), ((64, 64), 1.0, 4), ((16, 40), 0.3, 5)])
def test_round_trip_exact(shape, p_zero, seed):
    rng = np.random.default_rng(seed)
    k = rng.integers(-7, 8, size=shape)
    k[rng.random(shape) < p_zero] = 0
    if k.size > 3:
        k.flat[1], k.flat[2] = 127, -128  # Exp-Golomb escape path, both signs
    data = encode_layer(k)
    np.testing.assert_array_equal(decode_layer(data, k.shape).reshape(k.shape), k)


def test_size_near_entropy_bound_and_contexts_help_on_structured_data():
    rng = np.random.default_rng(0)
    iid = rng.integers(-7, 8, size=(128, 256))
    iid[rng.random(iid.shape) < 0.85] = 0
    n = len(encode_layer(iid))
    assert entropy_bytes(iid) <= n <= 1.05 * entropy_bytes(iid) + 16
    # a block of dead rows (pruned neurons): the neighbour contexts code it below the i.i.d. bound
    blocks = rng.integers(-7, 8, size=(128, 256))
    blocks[rng.random(blocks.shape) < 0.3] = 0
    blocks[64:] = 0
    assert len(encode_layer(blocks)) < 0.85 * entropy_bytes(blocks)


def test_coded_bytes_sums_layers():
    a, b = np.zeros((4, 4), int), np.arange(-6, 6).reshape(3, 4)
    total, sizes = coded_bytes([a, b])
    assert sizes == [len(encode_layer(a)), len(encode_layer(b))] and total == sum(sizes)


def test_errors():
    with pytest.raises(TypeError, match="integers"):
        encode_layer(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="at least one weight"):
        as_matrix(np.zeros((0, 3), int))
    with pytest.raises(ValueError, match="too short"):
        decode_layer(b"\x00\x01", (2, 2))
