"""Tier 2 robustness: noise agreement, FGSM radius and clean accuracy, measured and recorded;
judged only against the user's bounds, and never on a randomly initialised model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_modeltiers.analysis.robustness import (
    EPSILONS,
    InitState,
    Perturbation,
    clean_accuracy,
    fgsm_radii,
    fgsm_targets,
    initialisation,
    noise_agreement,
)
from pytest_modeltiers.checks.tier2_robustness import check_robustness
from pytest_modeltiers.config.task_spec import get_builtin_task
from pytest_modeltiers.datasets import task_dataset
from pytest_modeltiers.models.adapters import get_adapter
from pytest_modeltiers.models.loader import LoadRequest, load_model

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_models"
FIXTURES = REPO / "fixtures" / "tier2_attribution"
RANDOM = InitState(True, "built for this test")
TRAINED = InitState(False, "built for this test")


def _loaded(path: Path):  # type: ignore[no-untyped-def]
    return load_model(LoadRequest(spec=str(path), rootdir=REPO))


def _data(task, size: int = 8) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return dict(task_dataset(task, "validation", size=size).tensors)


@pytest.mark.parametrize("example", ["tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq", "simple_cnn"])
def test_examples_are_measured_and_not_judged(example: str) -> None:
    loaded = _loaded(EXAMPLES / f"{example}.py")
    model = loaded.new_model().eval()
    init = initialisation(loaded.build, model)
    assert init.random, "the examples draw their weights (they seed themselves)"
    result = check_robustness(model, loaded.adapter, _data(loaded.task), init=init, data="d")
    assert result.status.value == "passed"
    assert "Not judged: the model is randomly initialised" in result.message
    details = result.details
    assert [level["level"] for level in details["noise"]] == [0.01, 0.03, 0.1, 0.3]
    for level in details["noise"]:
        assert 0.0 <= level["agreement"] <= 1.0 and level["compared"] > 0
    assert details["fgsm"]["examples"] == 8
    assert details["clean_accuracy"]["compared"] > 0
    assert details["judged"] is False and details["randomly_initialised"] is True


def test_bounds_are_not_applied_to_a_random_model() -> None:
    loaded = _loaded(EXAMPLES / "simple_cnn.py")
    model = loaded.new_model().eval()
    result = check_robustness(
        model, loaded.adapter, _data(loaded.task), init=RANDOM, min_radius=100.0
    )
    assert result.status.value == "skipped"
    assert "robustness bounds not applied: the model is randomly initialised" in result.message
    assert result.details["fgsm"]["radii"]  # the numbers are still recorded


def test_bounds_judge_a_trained_model_both_ways() -> None:
    loaded = _loaded(FIXTURES / "fixed_weights_cnn.py")
    model = loaded.new_model().eval()
    init = initialisation(loaded.build, model)
    assert not init.random
    data = _data(loaded.task)
    strict = check_robustness(
        model, loaded.adapter, data, init=init, min_agreement=1.0, min_radius=10.0
    )
    assert strict.status.value == "failed"
    assert "is below --tier2-min-radius 10" in strict.message
    assert "Train with noise or adversarial augmentation" in strict.message
    lenient = check_robustness(
        model, loaded.adapter, data, init=init, min_agreement=0.0, min_radius=1e-6
    )
    assert lenient.status.value == "passed"
    assert lenient.message.startswith("within the bounds")
    assert lenient.details["judged"] is True


def test_agreement_falls_below_the_bound_under_heavy_noise() -> None:
    loaded = _loaded(EXAMPLES / "tiny_gpt.py")
    model = loaded.new_model().eval()
    result = check_robustness(
        model, loaded.adapter, _data(loaded.task), init=TRAINED, min_agreement=0.99
    )
    assert result.status.value == "failed"
    assert "is below --tier2-min-agreement 0.99" in result.message
    worst = min(level["agreement"] for level in result.details["noise"])
    assert f"agreement under noise {worst:.3g} at level 0.3" in result.message


def test_zero_noise_agrees_everywhere_and_agreement_falls_with_noise() -> None:
    loaded = _loaded(EXAMPLES / "tiny_gpt.py")
    perturbation = Perturbation.of(loaded.new_model().eval(), loaded.adapter, _data(loaded.task))
    levels = noise_agreement(perturbation, (0.0, 0.01, 1.0))
    assert levels[0]["agreement"] == 1.0
    assert levels[1]["agreement"] > levels[2]["agreement"]
    # Only real tokens count: the compared predictions are the real positions, per draw.
    real = int(perturbation.batch["attention_mask"].sum())
    assert levels[0]["compared"] == 4 * real


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 4 * 4, 2)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(pixel_values.flatten(1))


def test_fgsm_radius_of_a_linear_model_is_its_margin() -> None:
    """For logits W x + b the signed step moves the margin by eps * range * |w1 - w0|_1, so the
    radius is margin / (range * |w1 - w0|_1), up to the bisection's resolution."""
    task = get_builtin_task("vision_tiny").merged(
        {"input_schema": {"image_size": [3, 4, 4]}, "preprocessing_config": {"normalize": False}}
    )
    torch.manual_seed(0)
    model = Linear().eval()
    pixels = torch.rand(6, 3, 4, 4) * 0.2 + 0.4  # far from the clipping at 0 and 1
    perturbation = Perturbation.of(model, get_adapter(task), {"pixel_values": pixels})
    low, high = perturbation.bounds or (0.0, 0.0)
    radii = fgsm_radii(perturbation, fgsm_targets(perturbation))
    with torch.no_grad():
        logits = model(pixels)
    weights = model.head.weight.detach()
    assert sum(radius is not None for radius in radii) >= 3
    for row, radius in enumerate(radii):
        margin = float((logits[row, 0] - logits[row, 1]).abs())
        expected = margin / ((high - low) * float((weights[1] - weights[0]).abs().sum()))
        if expected > max(EPSILONS):
            assert radius is None
        else:
            assert radius == pytest.approx(expected, rel=0.03)


def test_clean_accuracy_scores_next_tokens_at_real_positions() -> None:
    task = get_builtin_task("lm_tiny").with_vocab_size(5)
    ids = torch.tensor([[1, 2, 3, 0], [4, 3, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": ids}
    perfect = torch.nn.functional.one_hot(ids.roll(-1, dims=1), 5).float()
    accuracy, compared = clean_accuracy(get_adapter(task), perfect, batch)
    assert (accuracy, compared) == (1.0, 3)  # 2->3 after 1, 3 after 2, 3 after 4


def test_initialisation_tells_loaded_weights_from_drawn_ones(tmp_path: Path) -> None:
    def drawn() -> nn.Module:
        torch.manual_seed(0)  # a factory that seeds itself still draws its weights
        return nn.Linear(4, 2)

    assert initialisation(drawn, drawn()).random
    checkpoint = tmp_path / "weights.pt"
    torch.save(drawn().state_dict(), checkpoint)

    def loaded() -> nn.Module:
        model = nn.Linear(4, 2)
        model.load_state_dict(torch.load(checkpoint, weights_only=True))
        return model

    state = initialisation(loaded, loaded())
    assert not state.random
    assert "same under any seed: loaded from a checkpoint" in state.reason
    assert torch.initial_seed() is not None and torch.manual_seed is not None  # restored


# --------------------------------------------------------------------------- as users run it


def test_suite_records_the_numbers_in_the_report(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        f"--model={EXAMPLES / 'tiny_gpt.py'}",
        "-m",
        "tier2",
        "-k",
        "robustness",
        "-p",
        "no:cacheprovider",
        "--modeltiers-report=health.json",
    )
    result.assert_outcomes(passed=1)
    report = json.loads((pytester.path / "health.json").read_text())
    (check,) = [c for c in report["checks"] if c["check_name"] == "test_robustness"]
    assert "Not judged: the model is randomly initialised" in check["message"]
    assert "16 examples of the lm_tiny validation split" in check["details"]["data"]
    assert check["details"]["fgsm"]["examples"] == 16


def test_suite_skips_a_bound_on_a_random_model_and_fails_a_trained_one(
    pytester: pytest.Pytester,
) -> None:
    args = ["-m", "tier2", "-k", "robustness", "-p", "no:cacheprovider", "-rs"]
    random = pytester.runpytest(
        f"--model={EXAMPLES / 'simple_cnn.py'}", "--tier2-min-radius=5", *args
    )
    random.assert_outcomes(skipped=1)
    random.stdout.fnmatch_lines(["*robustness bounds not applied: the model is randomly*"])
    trained = pytester.runpytest(
        f"--model={FIXTURES / 'fixed_weights_cnn.py'}", "--tier2-min-radius=5", *args
    )
    trained.assert_outcomes(failed=1)
    trained.stdout.fnmatch_lines(["*the median FGSM radius * is below --tier2-min-radius 5*"])


def test_a_text_model_without_an_embedding_module_is_skipped_with_the_reason() -> None:
    class HandEmbedded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.randn(256, 8))
            self.head = nn.Linear(8, 2)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.head(self.table[input_ids].mean(dim=1))

    loaded = _loaded(EXAMPLES / "tiny_encoder_cls.py")
    result = check_robustness(HandEmbedded(), loaded.adapter, _data(loaded.task), init=TRAINED)
    assert result.status.value == "skipped"
    assert result.message.startswith("robustness is measured in embedding space, and no ")
