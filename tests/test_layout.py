"""The package's shape: the CLI starts without the heavy libraries; imports point down."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "ray", "onnxruntime")


def test_hardneg_help_imports_no_heavy_library():
    code = ("import sys; from typer.testing import CliRunner; from hardneg.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(app, ['mine', '--help']); assert r.exit_code == 0, r.output; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`hardneg --help` imported {out.stdout.strip()}"
