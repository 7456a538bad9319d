import subprocess
import sys

from lab.cli.main import main


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for command in ("memory", "bench", "rollout", "cluster", "exercise", "validate"):
        assert command in out


def test_unknown_flag_exits_2_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "--no-such-flag"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr
