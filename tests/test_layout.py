"""The package layout contract: one `argusrank` namespace, and `platform/` never shadows the stdlib."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_platform_folder_has_no_top_init():
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_wins_with_repo_root_on_path():
    code = "import platform, sys; assert hasattr(platform, 'system'), platform; print(platform.system())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in {"Linux", "Darwin", "Windows"}


def test_namespace_maps_to_folders():
    import argusrank.features
    import argusrank.models
    import argusrank.platform.config

    assert Path(argusrank.platform.config.__file__).parent == ROOT / "platform"
    assert Path(argusrank.features.__file__).parent == ROOT / "features"
    assert Path(argusrank.models.__file__).parent == ROOT / "models"


def test_cli_help_lists_the_stage_commands():
    out = subprocess.run([sys.executable, "-m", "argusrank.platform.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for cmd in ("demo", "data", "config"):
        assert cmd in out.stdout
