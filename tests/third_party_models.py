"""The small third-party models of ``fixtures/third_party`` for tests that call checks directly.

One definition per model, shared with the plugin-level tests (which pass the same files to
``--model``), loaded the way the plugin loads them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from pytest_modeltiers.config.task_spec import TaskSpec
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.loader import LoadRequest, load_model

ROOT = Path(__file__).resolve().parents[1]
THIRD_PARTY = ROOT / "fixtures" / "third_party"
HF_FILES = {"gpt2": "hf_gpt2.py", "bert": "hf_bert_cls.py", "t5": "hf_t5.py", "vit": "hf_vit.py"}


def hf_model(kind: str) -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    """A fresh Hugging Face model (``gpt2``, ``bert``, ``t5`` or ``vit``) in eval mode."""
    pytest.importorskip("transformers")
    with pytest.MonkeyPatch.context() as offline:
        offline.setenv("HF_HUB_OFFLINE", "1")
        offline.setenv("TRANSFORMERS_OFFLINE", "1")
        loaded = load_model(LoadRequest(spec=str(THIRD_PARTY / HF_FILES[kind]), rootdir=ROOT))
        model = loaded.new_model().eval()
    return model, loaded.adapter, loaded.task
