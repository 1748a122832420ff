import json
import subprocess
import sys

from unified_framework.cli.main import main


def test_version_and_help_list_verbs(capsys):
    run = subprocess.run(
        [sys.executable, "-m", "unified_framework", "--help"], capture_output=True, text=True
    )
    assert run.returncode == 0
    for verb in ("info", "modules"):
        assert verb in run.stdout


def test_info_json_reports_machine_and_backends(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cpus"] >= 1 and info["memory_gib"] > 0
    assert info["packages"]["torch"] == "2.14.1"
    assert set(info["backends"]) >= {"tomopy", "tensorflow", "nnunetv2"}
    assert isinstance(info["gpus"], list)


def test_input_errors_become_one_line_exit_2(tmp_path, capsys):
    status = main(["modules", "list", "--catalogue", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("mdlma: error: ") and str(tmp_path) in err and err.count("\n") == 1
