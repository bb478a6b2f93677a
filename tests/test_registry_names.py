"""The light name tables that the command lines read (without importing TensorFlow) agree with
the registries they describe, and a registry refuses a name its table lacks."""
import pytest

from ecqx_tf import names
from ecqx_tf.registry import Registry
from models.names import ZOO_MODELS


def test_tables_agree_with_registries():
    from ecqx_tf.methods.criteria import CRITERIA
    from ecqx_tf.methods.mixed_precision import COSTS
    from ecqx_tf.methods.sharing import ALLOWED_CLUSTERS
    from ecqx_tf.relevance import COMPOSITES, REFERENCES
    from models import zoo

    assert sorted(ZOO_MODELS) == zoo.names()
    assert sorted(names.CRITERIA) == CRITERIA.names()
    assert sorted(names.LRP_COMPOSITES) == COMPOSITES.names()
    assert sorted(names.DEEPLIFT_REFERENCES) == REFERENCES.names()
    assert sorted(names.WEIGHT_COSTS) == COSTS.names()
    assert tuple(names.SHARING_CLUSTERS) == tuple(ALLOWED_CLUSTERS)


def test_registry_refuses_names_outside_its_table():
    r = Registry("thing", known=("a",), known_in="somewhere.py")
    r.register("a")(1)
    with pytest.raises(ValueError, match=r"thing 'b' is not in the name table somewhere.py \(a\); add it there"):
        r.register("b")(2)


def test_command_line_choices_come_from_the_tables():
    from cli.compress import build_parser
    from cli.train import build_parser as _parser

    text = _parser().format_help()
    assert all(n in text for n in ZOO_MODELS)
    sub = build_parser()._subparsers._group_actions[0].choices["relevance_pruning"].format_help()
    assert all(n in sub for n in names.CRITERIA if n != "magnitude") and "epsilon_plus_flat" in sub
