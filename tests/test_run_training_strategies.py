"""Strategy/device guardrails, notebook and terminal detection, and the LR schedule."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from pytest_modeltiers.config import TrainingConfig
from pytest_modeltiers.errors import ConfigError, ModelTiersWarning
from pytest_modeltiers.training import lightning_strategies
from pytest_modeltiers.training.lightning_strategies import (
    in_notebook,
    relaunch_blocker,
    resolve_distribution,
    show_progress_bar,
)
from pytest_modeltiers.training.schedule import LRSchedule, schedule_for

TORCHRUN = {
    "RANK": "1",
    "GROUP_RANK": "0",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "WORLD_SIZE": "2",
}


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lightning_strategies, "_cuda_count", lambda: 0)
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)


def cfg(**kw: Any) -> TrainingConfig:
    return TrainingConfig(precision="32-true", **kw)


def test_ddp_on_one_process_falls_back_to_auto_with_a_warning(no_cuda: None) -> None:
    with pytest.warns(ModelTiersWarning, match="strategy 'ddp' with 1 CPU process .* falling back"):
        dist = resolve_distribution(cfg(strategy="ddp", devices=1))
    assert (dist.strategy, dist.devices, dist.requested_strategy) == ("auto", 1, "ddp")
    assert dist.notes


def test_fsdp_without_cuda_falls_back_and_on_one_gpu_warns(
    no_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.warns(ModelTiersWarning, match="'fsdp' shards the model across GPUs"):
        assert resolve_distribution(cfg(strategy="fsdp_native")).strategy == "auto"
    monkeypatch.setattr(lightning_strategies, "_cuda_count", lambda: 1)
    with pytest.warns(ModelTiersWarning, match="'fsdp' on a single GPU shards nothing"):
        dist = resolve_distribution(cfg(strategy="fsdp", devices=1))
    assert (dist.accelerator, dist.strategy) == ("gpu", "fsdp")


def test_several_processes_from_pytest_fall_back_instead_of_rerunning_pytest(
    no_cuda: None,
) -> None:
    assert relaunch_blocker() is not None  # this process is pytest
    with pytest.warns(ModelTiersWarning, match="2 processes were requested, but the main program"):
        dist = resolve_distribution(cfg(strategy="ddp", devices=2))
    assert (dist.strategy, dist.processes) == ("auto", 1)


def test_under_torchrun_devices_auto_is_the_local_world_size(
    no_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    dist = resolve_distribution(cfg(strategy="ddp", devices="auto"))
    assert (dist.strategy, dist.devices, dist.processes) == ("ddp", 2, 2)


def test_cpu_refuses_gpu_device_lists_and_gpu_counts_are_checked(
    no_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="devices is the number of processes"):
        resolve_distribution(cfg(devices=[0, 1]))
    monkeypatch.setattr(lightning_strategies, "_cuda_count", lambda: 1)
    with pytest.raises(ConfigError, match="asks for 4 GPUs but 1 are visible"):
        resolve_distribution(cfg(devices=4))
    assert resolve_distribution(cfg(), accelerator="cpu").accelerator == "cpu"


def test_use_amp_false_means_full_precision(no_cuda: None) -> None:
    assert resolve_distribution(TrainingConfig(use_amp=False)).precision == "32-true"
    assert resolve_distribution(TrainingConfig(precision="bf16-mixed")).precision == "bf16-mixed"


def test_notebooks_are_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not in_notebook()
    ZMQInteractiveShell = type("ZMQInteractiveShell", (), {})
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: ZMQInteractiveShell()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert in_notebook()
    assert relaunch_blocker() == "this is a notebook"
    assert not show_progress_bar()


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    assert show_progress_bar()
    monkeypatch.setattr(sys, "stderr", types.SimpleNamespace(isatty=lambda: False))
    assert not show_progress_bar()


def test_schedules_warm_up_then_decay() -> None:
    linear = LRSchedule("linear", total_steps=10, warmup_steps=4, min_lr_ratio=0.1)
    assert [linear(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert linear(4) == pytest.approx(1.0)
    assert linear(10) == pytest.approx(0.1)
    cosine = LRSchedule("cosine", total_steps=10, warmup_steps=0)
    assert cosine(0) == pytest.approx(1.0) and cosine(5) == pytest.approx(0.5)
    assert cosine(10) == pytest.approx(0.0, abs=1e-12)
    assert LRSchedule("constant", total_steps=10, warmup_steps=5)(0) == 1.0
    assert LRSchedule("constant_with_warmup", total_steps=10, warmup_steps=1)(0) == 0.5
    assert schedule_for(TrainingConfig(use_lr_schedule=False), 10) is None
    derived = schedule_for(TrainingConfig(warmup_ratio=0.25, lr_scheduler="linear"), 8)
    assert derived is not None and derived.warmup_steps == 2
    with pytest.raises(ValueError, match="unknown lr schedule"):
        LRSchedule("step", total_steps=1, warmup_steps=0)
