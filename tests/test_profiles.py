"""Reference profiles: exact signals, safe storage, quiet on healthy data, loud on drift."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_modeltiers.config.task_spec import get_builtin_task
from pytest_modeltiers.datasets import task_dataset
from pytest_modeltiers.drift.distribution import (
    ProfileError,
    compare_profiles,
    compute_profile,
    numeric_signal,
    profile_signals,
)
from pytest_modeltiers.drift.profile_io import (
    load_profile,
    load_profile_from_db,
    log_profile_to_db,
    profile_from_dict,
    profile_to_dict,
    resolve_reference_profile,
    save_profile,
)
from pytest_modeltiers.drift.verdicts import DEFAULT_ALPHA
from pytest_modeltiers.models.loader import LoadedModel, LoadRequest, load_model
from pytest_modeltiers.store.experiment_db import ExperimentDB

REPO = Path(__file__).resolve().parents[1]
SEEDS = 50


def example(name: str) -> LoadedModel:
    return load_model(LoadRequest(spec=str(REPO / "example_models" / f"{name}.py"), rootdir=REPO))


@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    return example("simple_cnn")


# --------------------------------------------------------------------------- signals


def test_numeric_signals_are_the_sample_itself_up_to_order() -> None:
    values = np.array([3.0, 1.0, 2.0, 1.0, np.nan, np.inf, 2.0, 2.0])
    sig = numeric_signal(values)
    assert sig.values.tolist() == [1.0, 2.0, 3.0] and sig.counts.tolist() == [2, 3, 1]
    assert sig.nonfinite == 2 and sig.n == 6 and sig.exact
    assert sig.sample().tolist() == sorted(v for v in values.tolist() if np.isfinite(v))
    scores = np.random.default_rng(0).random(1000).astype(np.float32)
    exact = numeric_signal(scores)
    assert exact.counts is None and np.array_equal(exact.sample(), np.sort(scores).astype(float))


def test_above_the_cap_a_numeric_signal_keeps_equal_mass_atoms() -> None:
    data = np.random.default_rng(1).normal(size=10_000)
    atoms = numeric_signal(data, max_exact_values=100)
    assert not atoms.exact and atoms.n == 10_000 and atoms.values.size <= 100
    gap = np.abs(np.searchsorted(np.sort(data), atoms.sample()) - np.arange(10_000)).max()
    assert gap <= 100  # each atom stands for its own block of the sorted sample
    ref = profile_signals({"x": data}, max_exact_values=100)
    cur = profile_signals({"x": np.random.default_rng(2).normal(size=10_000)})
    report = compare_profiles(ref, cur)
    assert report["x"].details["approximate_profile"] is True and not report["x"].drifted


def test_text_inputs_count_real_tokens_and_lengths_without_padding() -> None:
    task = get_builtin_task("lm_tiny").with_vocab_size(10)
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 0], [5, 0, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]),
    }
    profile = compute_profile(None, None, task, batch)
    assert profile.signals["input_tokens"].counts == {5: 2, 6: 1, 7: 1}  # no pad id 0
    assert profile.signals["input_length"].sample().tolist() == [1.0, 3.0]
    assert not profile.has_outputs and profile.n_examples == 2


def test_vision_statistics_use_the_images_actual_range(cnn: LoadedModel) -> None:
    pixels = torch.full((2, 3, 4, 4), -0.75)  # normalised images live in [-1, 1]
    pixels[1] = 0.5
    profile = compute_profile(None, None, cnn.task, {"pixel_values": pixels})
    assert profile.signals["pixel_mean_c0"].sample().tolist() == [-0.75, 0.5]
    assert profile.signals["pixel_std_c2"].sample().tolist() == [0.0, 0.0]


def test_output_signals_are_predictions_confidence_and_entropy(cnn: LoadedModel) -> None:
    model = cnn.new_model()
    profile = compute_profile(model, cnn.adapter, cnn.task, task_dataset(cnn.task, "test"))
    probs = torch.softmax(model(task_dataset(cnn.task, "test").tensors["pixel_values"]), -1)
    assert profile.signals["predicted_class"].n == 64
    expected = np.sort(probs.max(-1).values.detach().numpy().astype(np.float64))
    assert np.allclose(profile.signals["max_probability"].sample(), expected)
    entropy = profile.signals["entropy"].sample()
    assert entropy.min() >= 0 and entropy.max() <= np.log(4) + 1e-6


# --------------------------------------------------------------------------- storage


def _profile(cnn: LoadedModel) -> object:
    return compute_profile(
        cnn.new_model(), cnn.adapter, cnn.task, task_dataset(cnn.task, "validation"), source="val"
    )


def test_json_round_trip_is_exact_and_hashed(cnn: LoadedModel, tmp_path: Path) -> None:
    profile = _profile(cnn)
    path = save_profile(profile, tmp_path / "ref.json")
    loaded = load_profile(path)
    assert profile_to_dict(loaded) == profile_to_dict(profile)
    assert loaded.content_hash == profile.content_hash and profile.content_hash.startswith(
        "sha256:"
    )
    for name, sig in profile.signals.items():
        if sig.kind == "numeric":
            assert np.array_equal(loaded.signals[name].sample(), sig.sample())
    data = json.loads(path.read_text())
    assert data["format_version"] == 1 and "pytest_modeltiers" in data["versions"]
    assert data["signals"]["max_probability"]["summary"]["n"] == 64


def test_tampered_corrupt_and_foreign_files_are_refused(cnn: LoadedModel, tmp_path: Path) -> None:
    data = profile_to_dict(_profile(cnn))
    edited = json.loads(json.dumps(data))
    edited["signals"]["predicted_class"]["counts"][0] += 1
    with pytest.raises(ProfileError, match="fails its integrity check"):
        profile_from_dict(edited)
    truncated = tmp_path / "cut.json"
    truncated.write_text(json.dumps(data)[:200])
    with pytest.raises(ProfileError, match=r"not valid JSON.*recompute"):
        load_profile(truncated)
    newer = {**data, "format_version": 99}
    with pytest.raises(ProfileError, match="upgrade pytest-modeltiers"):
        profile_from_dict(newer)
    with pytest.raises(ProfileError, match="not a pytest-modeltiers profile"):
        profile_from_dict({"checks": []})
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.json")


def test_database_storage_and_the_option_forms(cnn: LoadedModel, tmp_path: Path) -> None:
    profile = _profile(cnn)
    db = ExperimentDB(tmp_path / "exp.db")
    run = db.log_run("reference")
    log_profile_to_db(db, run, profile)
    assert log_profile_to_db(db, run, profile) == log_profile_to_db(db, run, profile)
    back = load_profile_from_db(db, run)
    assert back.content_hash == profile.content_hash
    loaded, where = resolve_reference_profile(str(run), db_path=tmp_path / "exp.db")
    assert (
        loaded.content_hash == profile.content_hash
        and where == f"run {run} profile 'dataset_profile'"
    )
    save_profile(profile, tmp_path / "p.json")
    assert resolve_reference_profile("p.json", rootdir=tmp_path)[1] == f"file {tmp_path / 'p.json'}"
    with pytest.raises(ProfileError, match="add --experiment-db"):
        resolve_reference_profile(str(run))
    with pytest.raises(Exception, match="no profile named 'other'"):
        resolve_reference_profile(f"{run}:other", db_path=tmp_path / "exp.db")


# --------------------------------------------------------------------------- comparison


def test_shifted_data_drifts_and_reference_data_does_not(cnn: LoadedModel) -> None:
    model, task = cnn.new_model(), cnn.task
    ref = compute_profile(model, cnn.adapter, task, task_dataset(task, "validation"))
    same = compute_profile(model, cnn.adapter, task, task_dataset(task, "test"))
    moved = compute_profile(model, cnn.adapter, task, task_dataset(task, "test", shift=0.5))
    for group in ("input", "output"):
        assert not compare_profiles(ref, same, group=group).dataset_drifted
        assert compare_profiles(ref, moved, group=group).dataset_drifted
    report = compare_profiles(ref, moved, group="input")
    assert {s.name for s in report.drifted_signals} >= {f"pixel_mean_c{i}" for i in range(3)}


def test_signals_on_one_side_are_skipped_and_other_tasks_refused(cnn: LoadedModel) -> None:
    ref = compute_profile(None, None, cnn.task, task_dataset(cnn.task, "validation"))
    cur = compute_profile(cnn.new_model(), cnn.adapter, cnn.task, task_dataset(cnn.task, "test"))
    report = compare_profiles(ref, cur)
    assert {s.name for s in report.skipped} == {"predicted_class", "max_probability", "entropy"}
    assert "missing from the reference" in report["entropy"].reason
    text = get_builtin_task("cls_tiny").with_vocab_size(64)
    other = compute_profile(None, None, text, task_dataset(text, "test"))
    with pytest.raises(ProfileError, match="different data: reference family 'vision'"):
        compare_profiles(ref, other)


def test_many_token_categories_stay_quiet_at_large_sizes() -> None:
    p = 1.0 / np.arange(1, 5001)
    p /= p.sum()
    rng = np.random.default_rng(4)
    ref = profile_signals({"tok": rng.choice(5000, size=200_000, p=p)})
    cur = profile_signals({"tok": rng.choice(5000, size=200_000, p=p)})
    quiet = compare_profiles(ref, cur)["tok"]
    assert quiet.method == "jensen_shannon" and not quiet.drifted
    assert 2 < quiet.details["pooled_to_categories"] <= 5000
    q = p[::-1].copy()
    loud = compare_profiles(ref, profile_signals({"tok": rng.choice(5000, size=200_000, p=q)}))
    assert loud["tok"].drifted


@pytest.mark.parametrize("name", ["tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq", "simple_cnn"])
def test_false_alarm_rate_on_reference_data_is_at_most_twice_alpha(name: str) -> None:
    """50 seeds of held-out data from the reference distribution, inputs and predictions."""
    loaded = example(name)
    model, adapter, task = loaded.new_model(), loaded.adapter, loaded.task
    alarms = {"input": 0, "output": 0}
    power = 0
    for seed in range(SEEDS):
        ref = compute_profile(model, adapter, task, task_dataset(task, "validation", seed=seed))
        cur = compute_profile(model, adapter, task, task_dataset(task, "test", seed=seed))
        for group in alarms:
            alarms[group] += compare_profiles(ref, cur, group=group).dataset_drifted
        if seed < 10:  # and the same test is loud on shifted data
            moved = task_dataset(task, "test", seed=seed, shift=0.5)
            shifted = compute_profile(None, None, task, moved)
            power += compare_profiles(ref, shifted, group="input").dataset_drifted
    for group, count in alarms.items():
        assert count / SEEDS <= 2 * DEFAULT_ALPHA, f"{group}: {count}/{SEEDS} false alarms"
    assert power == 10
