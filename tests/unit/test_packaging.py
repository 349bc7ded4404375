import operator
import subprocess
import sys

import pytest

from baseline_operator.cli import main


def test_operator_folder_does_not_shadow_the_standard_library() -> None:
    assert operator.__file__ is not None
    assert "site-packages" not in operator.__file__
    assert callable(operator.itemgetter)


def test_help_describes_the_operator(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "SecurityBaseline" in capsys.readouterr().out


def test_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "baseline_operator", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("baseline-operator ")
