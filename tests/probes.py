"""Conftest snippets that tests plant in a subprocess run to observe the plugin from inside."""

#: Counts, in ``collections``, the garbage collections that start while a torch module is
#: executing its import (the plugin imports torch with the collector paused).
TORCH_IMPORT_COLLECTIONS = """
import gc
import sys

collections = []


def _count(phase, info):
    # A collection that starts while a torch module is executing its import.
    frame = sys._getframe(1) if phase == "start" else None
    while frame is not None:
        code = frame.f_code
        if code.co_name == "<module>" and "torch" in code.co_filename:
            collections.append(info["generation"])
            return
        frame = frame.f_back


gc.callbacks.append(_count)
"""
