"""α annealing (eqs. 4, 8) and λ̂ growth (eq. 10) in training samples of all workers:
monotone, capped, planned as a fraction of the run, the same per sample for any number of
workers, saved, frozen in eval."""

import pytest
import torch

from adasparse.config import ConfigError, PrunerConfig, load_model_config
from adasparse.model import build_model
from adasparse.schedules import DEFAULT_PLANNED_SAMPLES, alpha_at, anneal_samples, lambda_hat_at

from model_helpers import make_model_config, random_batch


def test_alpha_schedule_is_monotone_and_capped():
    cfg = PrunerConfig(alpha_anneal_samples=100)
    values = [alpha_at(s, cfg) for s in range(0, 300)]
    assert values[0] == pytest.approx(0.1)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[100] == pytest.approx(5.0) and max(values) == pytest.approx(5.0)
    assert values[50] == pytest.approx(0.1 + 4.9 * 0.5)


def test_alpha_anneals_over_a_fraction_of_the_planned_run():
    cfg = PrunerConfig()  # default: α_max reached after a quarter of the run
    assert anneal_samples(cfg, 1_000_000) == 250_000
    assert alpha_at(125_000, cfg, 1_000_000) == pytest.approx(0.1 + 4.9 * 0.5)
    assert alpha_at(250_000, cfg, 1_000_000) == pytest.approx(5.0)
    assert anneal_samples(cfg) == DEFAULT_PLANNED_SAMPLES // 4  # nobody planned the run
    assert anneal_samples(PrunerConfig(alpha_anneal_fraction=1.0), 800) == 800
    assert anneal_samples(PrunerConfig(alpha_anneal_samples=123), 1_000_000) == 123  # the fixed schedule wins


def test_lambda_hat_starts_at_001_and_grows_per_thousand_samples_to_its_cap():
    cfg = PrunerConfig(lambda_growth=0.01, lambda_max=1.0)
    assert lambda_hat_at(0, cfg) == pytest.approx(0.01)
    assert lambda_hat_at(10_000, cfg) == pytest.approx(0.11)
    assert lambda_hat_at(10_000_000, cfg) == 1.0


def test_the_replaced_step_schedule_is_a_clear_error(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("features: {domain_fields: [{name: d, buckets: 4}]}\npruner: {alpha_anneal_steps: 500}\n")
    with pytest.raises(ConfigError, match="pruner: alpha_anneal_steps was replaced: the schedules count training samples"):
        load_model_config(path)


def test_alpha_advances_in_training_is_frozen_in_eval_and_restored():
    torch.manual_seed(0)
    cfg = make_model_config(alpha_anneal_samples=320)
    model = build_model(cfg)
    cat, num, _ = random_batch(cfg)  # 32 rows
    model.train()
    for _ in range(4):
        model(cat, num)
    a4 = model.alpha
    assert a4 == pytest.approx(0.1 + 4.9 * 0.4) and model.samples_seen == 128
    model.eval()
    for _ in range(5):
        model(cat, num)
    assert model.alpha == a4
    state = model.state_dict()
    assert (int(state["num_updates"]), int(state["num_samples"])) == (4, 128)
    fresh = build_model(cfg)
    assert fresh.alpha == pytest.approx(0.1)
    fresh.load_state_dict(state)
    assert fresh.alpha == a4
    fresh.train()
    fresh(cat, num)
    assert fresh.alpha == pytest.approx(0.1 + 4.9 * 0.5)


def test_one_and_two_workers_follow_the_same_curve_per_sample():
    """Two workers at batch 16 each cover 32 samples a step, like one worker at batch 32."""
    cfg = make_model_config()
    one, two = build_model(cfg).train(), build_model(cfg).train()
    one.plan_schedule(3_200, sample_scale=1)
    two.plan_schedule(3_200, sample_scale=2)
    cat, num, _ = random_batch(cfg)
    for _ in range(10):
        one(cat, num)
        two(cat[:16], num[:16])
        assert one.samples_seen == two.samples_seen and one.alpha == two.alpha and one.lambda_hat == two.lambda_hat
    assert one.alpha == pytest.approx(0.1 + 4.9 * 320 / (0.25 * 3_200))  # 320 samples of the 800 α anneals over


def test_each_forward_uses_the_alpha_of_its_position():
    torch.manual_seed(0)
    cfg = make_model_config(alpha_anneal_samples=64, formulation="binarization")
    model = build_model(cfg).train()
    cat, num, _ = random_batch(cfg)
    positions = [model(cat, num).samples for _ in range(3)]
    assert positions == [0, 32, 64]
