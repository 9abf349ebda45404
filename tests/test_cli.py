"""The command line as it stands: version and info (the full CLI is a later issue)."""

import json
import subprocess
import sys

from click.testing import CliRunner

import fastfp
from fastfp.cli import main


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert fastfp.__version__ in result.output


def test_info_is_json():
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["fastfp"] == fastfp.__version__ and "cpu" in info["backends"]


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["frobnicate"])
    assert result.exit_code == 2


def test_version_does_not_import_the_engine():
    code = "import sys; from fastfp.cli import main; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
