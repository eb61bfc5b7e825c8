"""α annealing (eqs. 4, 8) and λ̂ growth (eq. 10): monotone, capped, saved, frozen in eval."""

import pytest
import torch

from adasparse.config import PrunerConfig
from adasparse.model import build_model
from adasparse.schedules import alpha_at, lambda_hat_at

from model_helpers import make_model_config, random_batch


def test_alpha_schedule_is_monotone_and_capped():
    cfg = PrunerConfig(alpha_anneal_steps=100)
    values = [alpha_at(t, cfg) for t in range(0, 300)]
    assert values[0] == pytest.approx(0.1)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[100] == pytest.approx(5.0) and max(values) == pytest.approx(5.0)
    assert values[50] == pytest.approx(0.1 + 4.9 * 0.5)


def test_lambda_hat_starts_at_001_and_grows_to_its_cap():
    cfg = PrunerConfig(lambda_growth=0.01, lambda_max=1.0)
    assert lambda_hat_at(0, cfg) == pytest.approx(0.01)
    assert lambda_hat_at(10, cfg) == pytest.approx(0.11)
    assert lambda_hat_at(10_000, cfg) == 1.0


def test_alpha_advances_in_training_is_frozen_in_eval_and_restored():
    torch.manual_seed(0)
    cfg = make_model_config(alpha_anneal_steps=10)
    model = build_model(cfg)
    cat, num, _ = random_batch(cfg)
    model.train()
    for _ in range(4):
        model(cat, num)
    a4 = model.alpha
    assert a4 == pytest.approx(0.1 + 4.9 * 0.4)
    model.eval()
    for _ in range(5):
        model(cat, num)
    assert model.alpha == a4
    state = model.state_dict()
    assert int(state["num_updates"]) == 4
    fresh = build_model(cfg)
    assert fresh.alpha == pytest.approx(0.1)
    fresh.load_state_dict(state)
    assert fresh.alpha == a4
    fresh.train()
    fresh(cat, num)
    assert fresh.alpha == pytest.approx(0.1 + 4.9 * 0.5)


def test_each_forward_uses_the_alpha_of_its_step():
    torch.manual_seed(0)
    cfg = make_model_config(alpha_anneal_steps=2, formulation="binarization")
    model = build_model(cfg).train()
    cat, num, _ = random_batch(cfg)
    steps = [model(cat, num).step for _ in range(3)]
    assert steps == [0, 1, 2]
