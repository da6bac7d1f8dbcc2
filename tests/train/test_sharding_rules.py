"""config.sharding.rules: the user's rules come first, bad ones are named, and a rule that
cannot apply is reported instead of being skipped silently."""
import jax
import numpy as np
import pytest

from jaxaudio.errors import ConfigError
from jaxaudio.train.mesh import make_mesh
from jaxaudio.train.sharding import DEFAULT_RULES, param_shardings, report_unused_rules, resolve_rules

PARAMS = {"encoder": {"kernel": jax.ShapeDtypeStruct((64, 96), np.float32)},
          "head": {"kernel": jax.ShapeDtypeStruct((96, 10), np.float32)}}


def test_config_rules_come_before_model_rules_and_defaults():
    rules = resolve_rules([("^head/", "replicate")], [("^encoder/", "tensor_out")])
    assert rules[:2] == [("^head/", "replicate"), ("^encoder/", "tensor_out")]
    assert rules[2:] == list(DEFAULT_RULES)
    mesh = make_mesh(data=1, fsdp=1, tensor=2, devices=jax.devices()[:2])
    shardings = param_shardings(PARAMS, mesh, rules, min_size=1)
    assert shardings["encoder"]["kernel"].spec == jax.sharding.PartitionSpec(None, "tensor")
    assert shardings["head"]["kernel"].spec == jax.sharding.PartitionSpec()


@pytest.mark.parametrize("rule, message", [(("^x/", "sideways"), "kind 'sideways' is unknown"),
                                           (("(", "fsdp"), r"'\(' is not a valid regex"),
                                           (("^x/",), "expected \\(regex, kind\\)")])
def test_a_bad_rule_is_named(rule, message):
    with pytest.raises(ConfigError, match=r"config\.sharding\.rules\[0\]: " + message):
        resolve_rules([rule])


def test_rules_that_cannot_apply_are_reported():
    mesh = make_mesh(data=1, fsdp=1, tensor=4, devices=jax.devices()[:4])
    rules = resolve_rules([("^encoder/", "fsdp"),
                           ("^decoder/", "fsdp"),            # matches nothing
                           ("^head/", "tensor_out"),          # 10 outputs: the tensor axis (4) divides nothing
                           ("kernel$", "replicate"),          # both kernels match, both taken above
                           ])
    lines = []
    problems = report_unused_rules(PARAMS, mesh, rules, log=lines.append)
    assert problems == lines
    text = "\n".join(problems)
    assert "'^decoder/' -> fsdp: matches no parameter" in text
    assert "'^head/' -> tensor_out: the tensor axis (4) divides none" in text
    assert "'kernel$' -> replicate: every parameter it matches is taken by an earlier rule" in text
    assert len(problems) == 3                                 # '^encoder/' applies: not reported
