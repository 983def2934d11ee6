"""The shared core stays free of heavy imports, so a thin process (app.py --backend openai, the
replica the README's "Scaling out" runs on many machines) stays thin: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ["chat", "chat.settings", "chat.skills", "chat.skills_file", "chat.formats", "chat.context_window", "chat.messages", "chat.stopping",
        "chat.engine", "chat.session", "chat.web.tabs", "chat.instructions", "chat.markup", "chat.errors"]
NO_TORCH = [*CORE, "chat.remote.engine", "chat.web.page", "chat.api.server", "chat.cli.args", "chat.cli.talk", "chat.__main__", "app"]


def imported_after(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", NO_TORCH)
def test_the_core_the_page_the_api_and_the_remote_backend_import_no_torch(module):
    heavy = imported_after(module) & {"torch", "transformers"}
    assert not heavy, f"importing {module} imports {heavy}"


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_gradio(module):
    assert "gradio" not in imported_after(module)


def test_a_local_engine_does_bring_torch_when_used():
    assert "torch" in imported_after("chat.local.engine")  # the check above would see it: it can fail
