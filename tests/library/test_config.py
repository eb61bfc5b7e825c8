"""YAML configs validate into typed objects; every mistake is one line naming the key."""

import pytest

from adasparse.config import ConfigError, ModelConfig, PrunerConfig, load_model_config

BASE = """
kind: adasparse
features:
  domain_fields: [{name: user_gender_id, buckets: 8}]
  categorical_fields: [{name: item_id, buckets: 1000}]
"""


def write(tmp_path, text):
    p = tmp_path / "model.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_papers(tmp_path):
    cfg = load_model_config(write(tmp_path, BASE))
    p = cfg.pruner
    assert (p.beta, p.epsilon, p.alpha_init, p.alpha_max, p.r_min, p.r_max) == (2.0, 0.25, 0.1, 5.0, 0.15, 0.25)
    assert p.lambda_init == 0.01 and p.r_target == pytest.approx(0.2)
    assert cfg.hidden_units == [128, 64, 32] and cfg.backbone == "dnn"


def test_model_key_wrapper_accepted(tmp_path):
    cfg = load_model_config(write(tmp_path, "model:\n" + "\n".join("  " + l for l in BASE.splitlines())))
    assert isinstance(cfg, ModelConfig)


@pytest.mark.parametrize(
    "extra,expected",
    [
        ("pruner: {beta: 0.5}", "model.yaml: pruner.beta: Input should be greater than or equal to 1"),
        ("pruner: {r_min: 0.3, r_max: 0.2}", "model.yaml: pruner: r_min (0.3) must be below r_max (0.2)"),
        ("pruner: {formulation: hard}", "model.yaml: pruner.formulation: Input should be"),
        ("pruner: {epsilon: 0}", "model.yaml: pruner.epsilon: Input should be greater than 0"),
        ("pruner: {formulation: binarization, epsilon: 1.0}", "must be below the factor's maximum"),
        ("pruner: {formulation: scaling, regularize: true}", "scaling has no threshold"),
        ("hidden_sizes: [1]", "model.yaml: hidden_sizes: unknown key"),
        ("hidden_units: [0]", "model.yaml: hidden_units.0: Input should be greater than or equal to 1"),
        ("backbone: xdeepfm", "model.yaml: backbone: Input should be 'dnn' or 'dcnv2'"),
    ],
)
def test_one_line_errors(tmp_path, extra, expected):
    with pytest.raises(ConfigError) as err:
        load_model_config(write(tmp_path, BASE + extra + "\n"))
    msg = str(err.value)
    assert "\n" not in msg
    assert expected in msg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_model_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"model.yaml: line \d+ invalid YAML"):
        load_model_config(write(tmp_path, "kind: [unclosed\n"))
    with pytest.raises(ConfigError, match="field 'item_id' is listed twice"):
        load_model_config(
            write(tmp_path, BASE.replace("name: user_gender_id", "name: item_id"))
        )


def test_pruner_regularized_default():
    assert PrunerConfig(formulation="fusion").regularized
    assert PrunerConfig(formulation="binarization").regularized
    assert not PrunerConfig(formulation="scaling").regularized
    assert not PrunerConfig(formulation="fusion", regularize=False).regularized
