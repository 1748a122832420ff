"""Templates, validation and rendering of unified_framework.hpc (no cluster needed)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest_slurm import slurm_cluster, slurm_test_user, test_user_python  # noqa: F401 - fixtures

from unified_framework import hpc
from unified_framework.config import load_config
from unified_framework.errors import InputError
from unified_framework.hpc.render import SBATCH_LINE_RE, check_rendered
from unified_framework.hpc.slurm import (
    SEP,
    count_gpus,
    parse_duration,
    parse_gres_used,
    parse_memory_mb,
    parse_sinfo,
)
from unified_framework.hpc.validation import ClusterLimits, array_indices

REQUIRED_TEMPLATES = {
    "sun-train",
    "sun-predict",
    "score",
    "python-script",
    "jupyter",
    "histology-match",
    "quantify",
    "denoise",
    "search",
    "pipeline",
    "al-train",
    "al-simulate",
    "compare",
    "infer",
    "nnunet-train",
    "nnunet-predict",
}


@pytest.fixture()
def workdir(tmp_path, monkeypatch) -> Path:
    """A working directory holding the inputs every template needs."""
    (tmp_path / "run.py").write_text("import sys\nprint('ran', sys.argv[1:])\n")
    for name in ("pred.tif", "gt.tif", "volume.tif", "images.tif", "labels.tif", "section.tif"):
        (tmp_path / name).write_bytes(b"\0")
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


MINIMAL = {
    "python-script": {"script": "run.py"},
    "score": {"pred": "pred.tif", "gt": "gt.tif"},
    "sun-train": {"images": "images.tif", "labels": "labels.tif"},
    "sun-predict": {"volume": "volume.tif", "model": "model"},
    "jupyter": {},
    "histology-match": {"volume": "volume.tif", "section": "section.tif"},
    "quantify": {"labels": "labels.tif"},
    "denoise": {"input": "volume.tif"},
    "search": {"pipeline": "run.py", "image": "volume.tif", "truth": "gt.tif"},
    "pipeline": {"pipeline": "run.py", "input": "volume.tif"},
    "al-train": {"project": "model"},
    "al-simulate": {"pairs": "images.tif labels.tif", "test_pairs": "volume.tif gt.tif"},
    "compare": {"train_pairs": "images.tif labels.tif", "test_pairs": "volume.tif gt.tif"},
    "infer": {"model": "model", "image": "volume.tif"},
    "nnunet-train": {},
    "nnunet-predict": {"volume": "volume.tif", "model": "model"},
}


def local_prepare(name, params, **kwargs):
    return hpc.prepare(name, params, backend="local", **kwargs)


def test_required_templates_exist_with_complete_forms():
    templates = {t.name: t for t in hpc.list_templates()}
    assert REQUIRED_TEMPLATES <= set(templates)
    for template in templates.values():
        assert template.readme.strip(), f"{template.name} has no README"
        assert template.title and template.description
        for p in template.parameters.values():
            assert p.help and p.type
            if p.type in {"int", "cpus", "gpus"}:
                assert p.min is not None and p.max is not None, (
                    f"{template.name}.{p.name} needs a range"
                )
        for source in template.sources.values():
            assert source.startswith("#!/bin/bash\n#SBATCH ")
            assert '{% include "environment.sh.j2" %}' in source
    assert [s.name for s in templates["sun-predict"].steps] == ["predict", "merge"]
    assert templates["sun-predict"].steps[1].after == "predict"
    assert templates["jupyter"].parameters["command"].locked


@pytest.mark.parametrize("name", sorted(REQUIRED_TEMPLATES))
def test_every_template_renders_valid_bash_with_module_load(name, workdir, tmp_path):
    prepared = local_prepare(name, MINIMAL[name])
    assert prepared.scripts
    for job in prepared.scripts:
        lines = job.text.splitlines()
        assert lines[0] == "#!/bin/bash"
        assert all(SBATCH_LINE_RE.fullmatch(d) for d in job.directives)
        assert (
            'module load "$mdlma_module"' in job.text
            and "mdlma_module=mdlma/unified-framework" in job.text
        )
        # Runs in place: changes into the working directory, copies nothing.
        assert f"cd -- {workdir}" in job.text and " cp " not in job.text
        script = tmp_path / f"{name}-{job.step}.sh"
        script.write_text(job.text)
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_issue_example_prints_the_batch_script(workdir, capsys):
    from unified_framework.cli.main import main

    status = main(
        [
            "jobs",
            "--backend",
            "local",
            "render",
            "python-script",
            "--set",
            "job_name=test",
            "--set",
            "script=run.py",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "#SBATCH --job-name=test\n" in out
    assert f"\npython {workdir / 'run.py'} \n" in out or f"\npython {workdir / 'run.py'}\n" in out


def test_params_file_and_set_precedence(workdir, capsys):
    from unified_framework.cli.main import main

    (workdir / "p.yml").write_text("job_name: from-file\nscript: run.py\ncpus: 2\n")
    status = main(
        [
            "jobs",
            "--backend",
            "local",
            "render",
            "python-script",
            "--params",
            "p.yml",
            "--set",
            "cpus=1",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "#SBATCH --job-name=from-file" in out and "#SBATCH --cpus-per-task=1\n" in out


def test_sun_predict_renders_array_and_merge_command_lines(workdir):
    prepared = local_prepare(
        "sun-predict", {**MINIMAL["sun-predict"], "axes": 9, "slabs": 2, "max_parallel": 4}
    )
    predict, merge = prepared.scripts
    assert "#SBATCH --array=0-17%4" in predict.directives
    assert (
        f"mdlma sun predict {workdir / 'volume.tif'} --model {workdir / 'model'} --out {workdir / 'segmentation.tif'} "
        f'--work-dir {workdir / "sun-work"} --axes 9 --slabs 2 --piece-index "$SLURM_ARRAY_TASK_ID" --device cpu'
        in predict.text
    )
    assert '--job-memory "${SLURM_MEM_PER_NODE:-2048}"' in predict.text  # the budget follows --mem
    assert (
        f"mdlma sun merge {workdir / 'sun-work'} --out {workdir / 'segmentation.tif'}" in merge.text
    )
    assert "#SBATCH --job-name=sun-predict-merge" in merge.directives
    assert merge.after == "predict"
    gpu = local_prepare("sun-predict", {**MINIMAL["sun-predict"], "gpus": 1}).scripts[0]
    assert "#SBATCH --gres=gpu:1" in gpu.directives and "--device cuda" in gpu.text


def test_compare_template_renders_one_task_per_method_and_the_merge(workdir):
    methods, merge = local_prepare(
        "compare",
        {**MINIMAL["compare"], "methods": "classical sun-9 sun-3", "max_parallel": 2, "gpus": 1},
    ).scripts
    assert "#SBATCH --array=0-2%2" in methods.directives  # one task per method
    assert (
        "mdlma compare --train images.tif labels.tif --test volume.tif gt.tif "
        '--methods classical sun-9 sun-3 --method-index "$SLURM_ARRAY_TASK_ID" '
        f"--out {workdir / 'comparison'} --sun-steps 1500" in methods.text
    )
    assert "--device cuda" in methods.text and "#SBATCH --gres=gpu:1" in methods.directives
    assert f"mdlma compare --merge-only --out {workdir / 'comparison'}" in merge.text
    assert merge.after == "methods" and "--gres" not in merge.directives


def test_al_templates_render_the_cell_array_merge_and_training(workdir):
    simulate, merge = local_prepare(
        "al-simulate",
        {**MINIMAL["al-simulate"], "functions": "random entropy", "seeds": 3, "max_parallel": 2},
    ).scripts
    assert "#SBATCH --array=0-8%2" in simulate.directives  # (2 functions + full) x 3 seeds
    assert (
        "mdlma al simulate --pair images.tif labels.tif --test-pair volume.tif gt.tif "
        f"--out {workdir / 'al-simulation'} --functions random entropy --seeds 0 1 2 --network hrnet"
        in simulate.text
    )
    assert '--cell-index "$SLURM_ARRAY_TASK_ID" --device cpu' in simulate.text
    assert f"mdlma al merge {workdir / 'al-simulation'}" in merge.text and merge.after == "simulate"
    train = local_prepare("al-train", {**MINIMAL["al-train"], "gpus": 1, "max_steps": 50}).scripts[
        0
    ]
    assert (
        f'mdlma al train {workdir / "model"} --device cuda --threads "$OMP_NUM_THREADS" --max-steps 50'
        in train.text
    )


def test_nnunet_command_lines(workdir):
    train = local_prepare(
        "nnunet-train", {"dataset_id": 7, "configuration": "3d_fullres", "fold": "2", "epochs": 5}
    ).scripts[0]
    assert (
        "mdlma nnunet train --id 7 --configuration 3d_fullres --fold 2 --epochs 5 --iterations 250 --device cpu"
        in train.text
    )
    gpu = local_prepare("nnunet-train", {"gpus": 1}).scripts[0]
    assert "#SBATCH --gres=gpu:1" in gpu.directives and "--device cuda" in gpu.text
    predict = local_prepare("nnunet-predict", MINIMAL["nnunet-predict"]).scripts[0]
    assert (
        f"mdlma nnunet predict {workdir / 'volume.tif'} --model {workdir / 'model'} "
        f"--out {workdir / 'nnunet-segmentation.tif'} --device cpu" in predict.text
    )
    nine = local_prepare("nnunet-predict", {**MINIMAL["nnunet-predict"], "axes": "9"}).scripts[0]
    assert "--axes 9 --device cpu" in nine.text
    with pytest.raises(InputError):
        local_prepare("nnunet-train", {"fold": "7"})


def test_histology_match_command_line(workdir):
    cone = (
        local_prepare(
            "histology-match",
            {**MINIMAL["histology-match"], "cone": 20, "extra_args": "--channel hed:0"},
        )
        .scripts[0]
        .text
    )
    assert (
        f"mdlma histology match {workdir / 'volume.tif'} {workdir / 'section.tif'} --out {workdir / 'histology-match'} "
        "--axis 1 0 0 --cone 20.0 --candidates 3 --device cpu --channel hed:0"
    ) in cone
    anywhere = (
        local_prepare(
            "histology-match", {**MINIMAL["histology-match"], "cutting_axis": "none", "gpus": 1}
        )
        .scripts[0]
        .text
    )
    assert "--axis" not in anywhere and "--cone" not in anywhere and "--device cuda" in anywhere


def test_denoise_search_and_pipeline_command_lines(workdir):
    denoise = local_prepare(
        "denoise",
        {
            **MINIMAL["denoise"],
            "method": "nl-means",
            "params": "h=0.04 patch_distance=4",
            "chunks": 64,
        },
    )
    assert (
        f"mdlma denoise nl-means {workdir / 'volume.tif'} --out {workdir / 'denoised.zarr'} --param h=0.04 --param patch_distance=4 --chunks 64"
        in denoise.scripts[0].text
    )
    search = local_prepare("search", {**MINIMAL["search"], "trials": 7, "cpus": 2})
    assert (
        f"mdlma search run {workdir / 'run.py'} --study {workdir / 'search-study'} --data {workdir / 'volume.tif'} "
        f"{workdir / 'gt.tif'} --trials 7 --sampler random --executor local --workers 2"
        in search.scripts[0].text
    )
    pipeline = local_prepare("pipeline", MINIMAL["pipeline"])
    assert (
        f"mdlma search apply {workdir / 'run.py'} {workdir / 'volume.tif'} --out {workdir / 'labels.tif'}"
        in pipeline.scripts[0].text
    )


def test_infer_array_and_merge_command_lines(workdir):
    predict, merge = local_prepare(
        "infer", {**MINIMAL["infer"], "tasks": 4, "extra_args": "--patch 256 256 --flips"}
    ).scripts
    assert "#SBATCH --array=0-3" in predict.directives
    assert (
        f"mdlma infer {workdir / 'model'} {workdir / 'volume.tif'} --out {workdir / 'segmentation.zarr'} "
        f'--work-dir {workdir / "segmentation.zarr.work"} --part "$SLURM_ARRAY_TASK_ID" --parts 4 --device cpu '
        '--threads "$OMP_NUM_THREADS" --patch 256 256 --flips'
    ) in predict.text
    assert "--finish" in merge.text and merge.after == "predict"
    assert "#SBATCH --job-name=infer-merge" in merge.directives


def test_score_and_train_command_lines(workdir):
    score = local_prepare(
        "score", {**MINIMAL["score"], "no_surface": "yes", "extra_args": "--labels 1 2"}
    )
    assert (
        f"mdlma score {workdir / 'pred.tif'} {workdir / 'gt.tif'} --json {workdir / 'score.json'} --no-surface --labels 1 2"
        in score.scripts[0].text
    )
    train = local_prepare(
        "sun-train", {**MINIMAL["sun-train"], "steps": "3", "axes": "3", "extra_args": "--depth 2"}
    )
    assert (
        f"mdlma sun train --pair {workdir / 'images.tif'} {workdir / 'labels.tif'} --out {workdir / 'sun-model.pt'} "
        '--axes 3 --steps 3 --batch-size 8 --device cpu --threads "$OMP_NUM_THREADS" --depth 2'
        in train.scripts[0].text
    )
    with pytest.raises(InputError, match="is not one of 3, 9"):
        local_prepare("sun-train", {**MINIMAL["sun-train"], "axes": 4})


def test_jupyter_module_parameter_loads_exactly_that_module(workdir):
    template = hpc.load_template("jupyter")
    values = hpc.validate_params(
        template, {"module": " mdlma/unified-framework/0.1.0 "}, cwd=workdir
    )
    assert values["module"] == "mdlma/unified-framework/0.1.0"  # blanks go, after the checks
    text = hpc.render(template, {**values, "modulepaths": ["/opt/m f"]})[0].text
    assert "module use '/opt/m f'\n" in text
    assert "module load mdlma/unified-framework/0.1.0 ||" in text and "mdlma_prefix=" not in text
    for bad, message in (
        ("../etc/x", "is not a module name"),
        ("a; id", "is not a module name"),
        ("a\nb", "control character"),
    ):
        with pytest.raises(InputError, match=message) as caught:
            hpc.validate_params(template, {"module": bad}, cwd=workdir)
        assert caught.value.field == "module"
    with pytest.raises(InputError, match="locked by the administrator"):
        hpc.validate_params(template, {"modulepaths": "/tmp/evil"}, cwd=workdir)
    narrowed = hpc.Parameter(**{**vars(template.parameters["module"]), "choices": ("a/1",)})
    only = hpc.Template(
        **{**vars(template), "parameters": {**template.parameters, "module": narrowed}}
    )
    with pytest.raises(InputError, match="'b/1' is not one of a/1"):
        hpc.validate_params(only, {"module": "b/1"}, cwd=workdir)


def test_jupyter_command_is_locked_but_the_hub_may_change_it(workdir):
    prepared = local_prepare("jupyter", {"port": 8899, "ip": "127.0.0.1"})
    assert (
        "exec batchspawner-singleuser jupyterhub-singleuser --ip=127.0.0.1 --port=8899 --notebook-dir="
        in prepared.scripts[0].text
    )
    with pytest.raises(InputError, match="locked by the administrator"):
        local_prepare("jupyter", {"command": "bash -c evil"})
    hub = local_prepare(
        "jupyter",
        {"command": "python -m unified_framework.hub.singleuser jupyterhub-singleuser"},
        allow_locked=True,
    )
    assert (
        "exec python -m unified_framework.hub.singleuser jupyterhub-singleuser --ip=0.0.0.0 --notebook-dir="
        in hub.scripts[0].text
    )


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("python-script", {"cpus": 0}, "0 cpus is not possible"),
        ("python-script", {"cpus": 1000}, "above the maximum 128"),
        ("python-script", {"cpus": "two"}, "expected a whole number"),
        ("python-script", {"cpus": True}, "expected a whole number"),
        ("python-script", {"mem": "lots"}, "not a memory size"),
        ("python-script", {"mem": "50M"}, "below the minimum 100M"),
        ("python-script", {"mem": "2T"}, "above the maximum 1T"),
        ("python-script", {"time": "1 hour"}, "not a SLURM time"),
        ("python-script", {"time": "8-00:00:00"}, "above the maximum"),
        ("python-script", {"time": "0"}, "must be positive"),
        ("python-script", {"array": "5-1"}, "runs backwards"),
        ("python-script", {"array": "0-99999"}, "at most 10000 array tasks"),
        ("python-script", {"array": "1;2"}, "not a SLURM array spec"),
        ("python-script", {"job_name": "my job"}, "not a valid name"),
        ("python-script", {"job_name": "-x"}, "not a valid name"),
        ("python-script", {"partition": "a b"}, "not a valid partition name"),
        ("python-script", {"script": "missing.py"}, "does not exist"),
        ("python-script", {"script": "model"}, "is not a file"),
        ("python-script", {"script": ""}, "a path is required"),
        ("python-script", {"args": "unbalanced 'quote"}, "check the quotes"),
        ("python-script", {"workdir": "run.py"}, "is not a directory"),
        ("python-script", {"nonsense": 1}, "unknown parameter 'nonsense'"),
        ("score", {"no_surface": "maybe"}, "expected true or false"),
        ("score", {"json_out": "no/such/folder/out.json"}, "does not exist"),
        ("jupyter", {"ip": "0.0.0.0; rm"}, "not a host name"),
        ("jupyter", {"default_url": "javascript:x"}, "does not match the required form"),
        ("jupyter", {"port": 70000}, "above the maximum 65535"),
        ("sun-predict", {"slabs": 65}, "above the maximum 64"),
        ("sun-train", {"gpus": -1}, "is not possible"),
    ],
)
def test_validation_rejects_with_one_line_messages(workdir, name, params, message):
    with pytest.raises(InputError) as info:
        local_prepare(name, {**MINIMAL[name], **params})
    text = str(info.value)
    assert message in text
    assert "\n" not in text and text.startswith(f"{name}: ")


def test_validation_normalises_values(workdir):
    template = hpc.load_template("python-script")
    values = hpc.validate_params(
        template,
        {"script": "run.py", "mem": "512m", "args": "a 'b c' $(x)", "cpus": "2", "time": "90"},
        cwd=workdir,
    )
    assert values["mem"] == "512M" and values["cpus"] == 2 and values["time"] == "90"
    assert values["args"] == ["a", "b c", "$(x)"]
    assert values["script"] == str(workdir / "run.py") and values["workdir"] == str(workdir)
    sub = workdir / "sub"
    sub.mkdir()
    (sub / "inner.py").write_text("")
    nested = hpc.validate_params(template, {"workdir": "sub", "script": "inner.py"}, cwd=workdir)
    assert nested["script"] == str(sub / "inner.py")
    assert hpc.validate_params(template, {"script": "sub/../run.py"}, cwd=workdir)["script"] == str(
        workdir / "run.py"
    )


def test_every_parameter_type_has_one_validator():
    from unified_framework.hpc.templates import PARAMETER_TYPES
    from unified_framework.hpc.validation import VALIDATORS

    assert set(VALIDATORS) == PARAMETER_TYPES


def test_text_refuses_exactly_the_control_separator_and_surrogate_code_points():
    """check_text's character class against unicodedata on every code point (Cc, Cs, Zl, Zp)."""
    import unicodedata

    from unified_framework.hpc.validation import check_text

    refused, accepted = [], []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        try:
            check_text(f"a{char}", "field")
            accepted.append(char)
        except InputError as exc:
            assert str(exc).startswith(f"field: control character U+{code:04X} at position 1 ")
            refused.append(char)
    should_refuse = {
        c
        for c in map(chr, range(sys.maxunicode + 1))
        if unicodedata.category(c) in {"Cc", "Cs", "Zl", "Zp"}
    }
    assert set(refused) == should_refuse and len(refused) == 65 + 2048 + 2
    assert check_text("ünïcödé ✓ tab-free", "field") == "ünïcödé ✓ tab-free"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read any file (see the next test)")
def test_validation_checks_permissions(workdir):
    secret = workdir / "secret.py"
    secret.write_text("")
    secret.chmod(0)
    with pytest.raises(InputError, match="is not readable"):
        local_prepare("python-script", {"script": "secret.py"})


PERMISSION_CHECK = """
import sys
from unified_framework import hpc
from unified_framework.errors import InputError
template = hpc.load_template("python-script")
hpc.validate_params(template, {"script": "open.py"}, cwd=sys.argv[1])
try:
    hpc.validate_params(template, {"script": "secret.py"}, cwd=sys.argv[1])
except InputError as exc:
    print("refused:", exc)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_validation_checks_permissions_as_an_unprivileged_user(slurm_test_user, test_user_python):  # noqa: F811
    folder = Path(tempfile.mkdtemp(prefix="mdlma-permissions-"))
    try:
        folder.chmod(0o777)  # the user's working directory must be writable by them
        for name, mode in (("open.py", 0o644), ("secret.py", 0o600)):  # owned by root
            (folder / name).write_text("")
            (folder / name).chmod(mode)
        run = subprocess.run(
            [*test_user_python, "-c", PERMISSION_CHECK, str(folder)],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": os.environ["PATH"], "HOME": pwd.getpwnam(slurm_test_user).pw_dir},
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert (
            run.stdout.strip()
            == f"refused: python-script: script: {folder / 'secret.py'} is not readable"
        )
    finally:
        shutil.rmtree(folder)


def test_hdf5_dataset_suffix_checks_the_file(workdir):
    (workdir / "vol.h5").write_bytes(b"\0")
    values = hpc.validate_params(
        hpc.load_template("score"), {"pred": "vol.h5::/seg", "gt": "gt.tif"}, cwd=workdir
    )
    assert values["pred"] == f"{workdir / 'vol.h5'}::/seg"
    with pytest.raises(InputError, match="does not exist"):
        hpc.validate_params(
            hpc.load_template("score"), {"pred": "none.h5::/seg", "gt": "gt.tif"}, cwd=workdir
        )


def _limits() -> ClusterLimits:
    nodes = "\n".join(
        SEP.join(fields)
        for fields in [
            ["cpu1", "debug*", "idle", "8", "0/8/0/8", "32000", "30000", "(null)", "(null)"],
            ["cpu1", "batch", "idle", "8", "0/8/0/8", "32000", "30000", "(null)", "(null)"],
            [
                "gpu1",
                "gpu",
                "mixed",
                "32",
                "4/28/0/32",
                "256000",
                "200000",
                "gpu:a100:4(S:0-1)",
                "a100",
            ],
        ]
    )
    parts = "\n".join(
        SEP.join(f)
        for f in [
            ["debug*", "up", "1:00:00", "10:00"],
            ["batch", "up", "7-00:00:00", "1:00:00"],
            ["gpu", "up", "2-00:00:00", "n/a"],
        ]
    )
    partitions, _ = parse_sinfo(parts, nodes)
    return ClusterLimits({p.name: p for p in partitions}, qos=("normal", "long"))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"partition": "nosuch"},
            "partition 'nosuch' does not exist here; available: debug, batch, gpu",
        ),
        ({"gpus": 1}, "partition 'debug' has no GPUs"),
        ({"partition": "gpu", "gpus": 5}, "has at most 4 per node"),
        ({"time": "02:00:00"}, "exceeds partition 'debug''s limit 1:00:00"),
        ({"cpus": 16, "partition": "batch"}, "exceeds the 8 CPUs of a node"),
        ({"mem": "64G"}, "exceeds the 32000 MB of a node"),
        ({"qos": "high"}, "QoS 'high' does not exist here"),
    ],
)
def test_cluster_limits_from_sinfo(workdir, params, message):
    template = hpc.load_template("python-script")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hpc.validate_params(
            template, {"script": "run.py", **params}, cwd=workdir, cluster=_limits()
        )


def test_cluster_limits_accept_what_fits(workdir):
    template = hpc.load_template("python-script")
    values = hpc.validate_params(
        template,
        {
            "script": "run.py",
            "partition": "gpu",
            "gpus": 4,
            "cpus": 32,
            "time": "1-00:00:00",
            "qos": "long",
        },
        cwd=workdir,
        cluster=_limits(),
    )
    assert values["gpus"] == 4
    assert _limits().default_partition == "debug"


def test_config_supplies_prefix_modulepath_and_defaults(workdir, monkeypatch, tmp_path):
    config = load_config()
    config["slurm"] = {
        **config["slurm"],
        "prefix": str(tmp_path / "pfx"),
        "modulepath": "/opt/modules",
        "module": "site/mdlma",
        "default_partition": "batch",
    }
    text = (
        hpc.prepare("python-script", MINIMAL["python-script"], backend="local", config=config)
        .scripts[0]
        .text
    )
    assert f"mdlma_prefix={tmp_path / 'pfx'}\n" in text
    assert "mdlma_modulepath=/opt/modules\n" in text and "mdlma_module=site/mdlma\n" in text
    assert "#SBATCH --partition=batch\n" in text
    monkeypatch.setenv("MDLMA_PREFIX", "/env/prefix")
    assert hpc.install_prefix({"slurm": {}}) == Path("/env/prefix")
    assert hpc.install_prefix({"slurm": {"prefix": "/cfg"}}) == Path("/cfg")
    monkeypatch.delenv("MDLMA_PREFIX")
    assert hpc.install_prefix({"slurm": {}}) == Path(__file__).resolve().parents[1] / ".mdlma"


def _custom_template(root: Path, name: str, script: str, form_extra: str = "") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "form.yml").write_text(
        "parameters:\n"
        "  job_name: {type: name, default: t, help: name}\n"
        "  workdir: {type: path, kind: dir, default: '.', help: dir}\n"
        "  note: {type: string, default: '', help: text}\n" + form_extra
    )
    (folder / "script.sh.j2").write_text(script)
    return folder


def test_renderer_refuses_free_text_in_sbatch_lines(tmp_path):
    folder = _custom_template(
        tmp_path, "bad", "#!/bin/bash\n#SBATCH --comment={{ note }}\necho hi\n"
    )
    template = hpc.load_template(folder)
    values = hpc.validate_params(template, {"note": "two words"}, cwd=tmp_path)
    with pytest.raises(InputError, match="values in #SBATCH lines must be plain words"):
        hpc.render(template, values)
    # A plain word passes: the check is about content, not the option.
    assert "#SBATCH --comment=word" in hpc.render(template, {**values, "note": "word"})[0].text
    with pytest.raises(InputError, match="rendering added #SBATCH directives"):
        check_rendered(
            template, "script.sh.j2", "#!/bin/bash\n#SBATCH --comment=a\n#SBATCH --nodes=2\n"
        )


def test_renderer_is_sandboxed_and_strict(tmp_path):
    template = hpc.load_template(
        _custom_template(tmp_path, "undef", "#!/bin/bash\necho {{ nothing_here }}\n")
    )
    with pytest.raises(InputError, match="'nothing_here' is undefined"):
        hpc.render(template, {"job_name": "t", "workdir": str(tmp_path), "note": ""})
    sneaky = hpc.load_template(
        _custom_template(
            tmp_path, "sneaky", "#!/bin/bash\n{{ ''.__class__.__mro__[1].__subclasses__() }}\n"
        )
    )
    with pytest.raises(InputError, match="template error"):
        hpc.render(sneaky, {"job_name": "t", "workdir": str(tmp_path), "note": ""})


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (
            "parameters:\n  job_name: {type: name, default: x}\n  workdir: {type: path, default: ., help: d}\n",
            "needs a default and a help",
        ),
        (
            "parameters:\n  job_name: {type: nope, default: x, help: h}\n  workdir: {type: path, default: ., help: d}\n",
            "type must be one of",
        ),
        (
            "parameters:\n  job_name: {type: name, default: x, help: h, colour: red}\n  workdir: {type: path, default: ., help: d}\n",
            "unknown keys",
        ),
        ("parameters:\n  workdir: {type: path, default: ., help: d}\n", "'job_name' is required"),
        ("parameters: [1, 2]\n", "expected a mapping"),
        ("parameters: {a: [\n", "not valid YAML"),
        (
            "jobs:\n  - {name: b, script: script.sh.j2, after: a}\nparameters:\n  job_name: {type: name, default: x, help: h}\n"
            "  workdir: {type: path, default: ., help: d}\n",
            "not an earlier job",
        ),
    ],
)
def test_broken_forms_are_refused(tmp_path, form, message):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "form.yml").write_text(form)
    (folder / "script.sh.j2").write_text("#!/bin/bash\n")
    with pytest.raises(InputError, match=message):
        hpc.load_template(folder)


def test_unknown_template_lists_the_known_ones():
    with pytest.raises(
        InputError,
        match="not found; expected one of al-simulate, al-train, compare, denoise, histology-match, infer, jupyter, nnunet-predict",
    ):
        hpc.load_template("no-such-template")


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("gpu", 1),  # a bare 'gpu' is one GPU
        ("gpu:2", 2),
        ("gpu:a100:4(S:0-1)", 4),
        ("gpu:a100:4(S:0-1),gpu:v100:2,shard:8", 6),  # several entries; only gpu counts
        ("gpu:a100:2(IDX:0,2),gpu(S:0)", 3),  # commas inside (...) do not split
        ("gpu:a100:0(IDX:N/A)", 0),  # GresUsed of a node with none allocated
        ("gpu:a100", 1),
        ("shard:8", 0),
        ("(null)", 0),
        ("", 0),
        (None, 0),
    ],
)
def test_count_gpus_edge_cases(gres, gpus):
    assert count_gpus(gres) == gpus


def test_gres_used_counts_each_node_once():
    text = "\n".join(
        SEP.join(f)
        for f in [
            ["g1", "gpu:a100:2(IDX:0-1)", ""],
            ["g1", "gpu:a100:2(IDX:0-1)", ""],  # the same node again, for another partition
            ["g2", "gpu:a100:0(IDX:N/A),gpu:v100:1(IDX:0)", ""],
            ["n1", "(null)", ""],
        ]
    )
    assert parse_gres_used(text) == {"g1": 2, "g2": 1, "n1": 0}


def test_job_log_path_of_records_array_tasks_and_foreign_jobs(tmp_path):
    from unified_framework.hpc import JobEntry, JobRecord, find_record, job_log_path

    record = JobRecord(
        "t",
        "slurm",
        "u",
        "h",
        "",
        str(tmp_path),
        str(tmp_path / "rec"),
        [
            JobEntry("main", "job.sh", "7", array="0-3", log="slurm-%A_%a.out"),
            JobEntry("merge", "merge.sh", "8"),
        ],
    )
    assert record.log_path("7_3") == tmp_path / "rec" / "slurm-7_3.out"
    assert record.log_path("8") == tmp_path / "rec" / "slurm-8.out"
    assert record.log_path("9") is None
    assert job_log_path("8", tmp_path, record) == tmp_path / "rec" / "slurm-8.out"
    # A job the framework did not submit: sbatch's default in its working directory.
    assert find_record(tmp_path, "9") is None
    assert job_log_path("9", tmp_path) == tmp_path / "slurm-9.out"
    assert job_log_path("9", "") is None


def test_parse_duration_refuses_garbage_with_an_input_error():
    for text in ("soon", "1:2:3:4", "-5", "1-"):
        with pytest.raises(InputError, match="SLURM time limit"):
            parse_duration(text)


def test_value_parsers():
    assert parse_duration("1-02:03:04") == 93784
    assert parse_duration("00:01.009") == pytest.approx(1.009)
    assert parse_duration("10:00") == 600 and parse_duration("90") == 5400
    assert parse_duration("UNLIMITED") == float("inf") and parse_duration("") is None
    assert parse_memory_mb("3120K") == pytest.approx(3.046875)
    assert (
        parse_memory_mb("4G") == 4096
        and parse_memory_mb("24105") == 24105
        and parse_memory_mb("") is None
    )
    assert count_gpus("gpu:a100:4(S:0-1),shard:8") == 4 and count_gpus("gpu:2,gpu:v100:1") == 3
    assert count_gpus("(null)") == 0
    assert array_indices("0-9:3,15%4") == [0, 3, 6, 9, 15]


def test_quota_parser():
    text = (
        "Disk quotas for user alice (uid 1000):\n"
        "     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace\n"
        "          /home  102400  500000  600000           1200       0       0\n"
        "       /scratch 9000000*       0 8000000    6days     10       0       0\n"
        "          /data       5       0       0              1       0       0\n"
    )
    assert hpc.jobs.parse_quota(text) == {
        "/home": (102400 * 1024, 600000 * 1024),
        "/scratch": (9000000 * 1024, 8000000 * 1024),
    }


# ---- One #SBATCH header: the resource parameters and directives live in slurm_templates/_shared/.
SHARED_RESOURCES = (
    "job_name",
    "workdir",
    "cpus",
    "mem",
    "time",
    "gpus",
    "partition",
    "account",
    "qos",
)


def test_shipped_templates_declare_only_their_own_parameters():
    import yaml

    root = hpc.templates_dir({"slurm": {}})
    shared = yaml.safe_load((root / "_shared" / "resources.yml").read_text())["parameters"]
    assert tuple(shared) == SHARED_RESOURCES
    for template in hpc.list_templates(root):
        form = yaml.safe_load((template.path / "form.yml").read_text())
        assert "resources" in form, template.name
        assert not set(form["parameters"]) & set(SHARED_RESOURCES), template.name
        header = (root / "_shared" / "resources.sh.j2").read_text()
        for step in template.steps:
            source = (template.path / step.script).read_text()
            # Only the job's name is the script's own; every resource directive comes from the include.
            assert (
                [line for line in source.splitlines() if line.startswith("#SBATCH")]
                == [line for line in source.splitlines() if line.startswith("#SBATCH --job-name=")]
                != []
            )
            assert '{% include "resources.sh.j2" %}' in source
            # Template.sources shows the header written out, for the directive checks.
            assert header.rstrip("\n") in template.sources[step.script]
        # job_name and workdir first, the template's own parameters, then the other resources.
        names = list(template.parameters)
        assert names[:2] == ["job_name", "workdir"]
        assert [n for n in names if n in SHARED_RESOURCES][2:] == [
            n for n in SHARED_RESOURCES[2:] if n in template.parameters
        ]
        assert template.parameters["job_name"].default == template.name
    assert "gpus" not in hpc.load_template("score").parameters


NOTE = "  note: {type: string, default: '', help: text}\n"


def _shared_template(root: Path, resources: str, own: str = NOTE) -> Path:
    folder = root / "mine"
    folder.mkdir(parents=True)
    (folder / "form.yml").write_text(f"title: Mine\nresources:\n{resources}parameters:\n{own}")
    (folder / "script.sh.j2").write_text(
        '#!/bin/bash\n#SBATCH --job-name={{ job_name }}\n{% include "resources.sh.j2" %}\necho {{ note }}\n'
    )
    return folder


def test_a_new_template_gets_the_shared_header_from_a_site_folder(tmp_path):
    # A site's templates folder without its own _shared/ uses the framework's.
    template = hpc.load_template(
        _shared_template(tmp_path, "  mem: {default: 3G}\n  gpus: {max: 2}\n")
    )
    assert list(template.parameters) == ["job_name", "workdir", "note", *SHARED_RESOURCES[2:]]
    assert template.parameters["job_name"].default == "mine"
    assert template.parameters["mem"].default == "3G" and template.parameters["gpus"].max == 2
    assert template.parameters["cpus"].help == "CPU cores."
    values = hpc.validate_params(
        template, {"gpus": 2, "partition": "p", "qos": "q", "account": "a"}, cwd=tmp_path
    )
    text = hpc.render(template, values)[0].text
    assert text.startswith(
        "#!/bin/bash\n#SBATCH --job-name=mine\n#SBATCH --nodes=1\n#SBATCH --ntasks=1\n#SBATCH --cpus-per-task=1\n"
        "#SBATCH --mem=3G\n#SBATCH --time=01:00:00\n#SBATCH --partition=p\n#SBATCH --account=a\n#SBATCH --qos=q\n"
        "#SBATCH --gres=gpu:2\necho ''\n"
    )
    with pytest.raises(InputError, match="gpus: 3 is above the maximum 2"):
        hpc.validate_params(template, {"gpus": 3}, cwd=tmp_path)


def test_a_template_can_leave_out_a_resource(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "form.yml").write_text("resources: {}\n")  # nothing of its own: no 'parameters:' needed
    (bare / "script.sh.j2").write_text(
        '#!/bin/bash\n#SBATCH --job-name={{ job_name }}\n{% include "resources.sh.j2" %}\n'
    )
    assert list(hpc.load_template(bare).parameters) == list(SHARED_RESOURCES)
    template = hpc.load_template(_shared_template(tmp_path, "  gpus: false\n"))
    assert "gpus" not in template.parameters
    text = hpc.render(template, hpc.validate_params(template, {}, cwd=tmp_path))[0].text
    assert "--gres" not in text and "#SBATCH --mem=4G\n" in text


@pytest.mark.parametrize(
    ("resources", "own", "message"),
    [
        (
            "  colour: {default: red}\n",
            "",
            "'colour' is not a shared resource; expected one of job_name, workdir",
        ),
        ("  mem: 4G\n", "", "'mem' must be a mapping of changed keys or false"),
        ("  job_name: false\n", "", "'job_name' must be a mapping of changed keys$"),
        (
            "  {}\n",
            "  cpus: {type: cpus, default: 1, min: 1, max: 2, help: c}\n",
            "'cpus' is a shared resource",
        ),
        ("  mem: {default: 4G, size: 2}\n", "", "parameter 'mem': unknown keys"),
    ],
)
def test_wrong_resource_sections_are_refused(tmp_path, resources, own, message):
    with pytest.raises(InputError, match=message):
        hpc.load_template(_shared_template(tmp_path, resources, own or NOTE))


def test_directive_check_counts_the_included_header(tmp_path):
    template = hpc.load_template(_shared_template(tmp_path, "  {}\n"))
    header = (hpc.templates_dir({"slurm": {}}) / "_shared" / "resources.sh.j2").read_text()
    allowed = 1 + sum(line.startswith("#SBATCH") for line in header.splitlines())
    script = "#!/bin/bash\n" + "#SBATCH --nodes=1\n" * allowed
    check_rendered(template, "script.sh.j2", script)
    with pytest.raises(InputError, match="rendering added #SBATCH directives"):
        check_rendered(template, "script.sh.j2", script + "#SBATCH --nodes=2\n")


# ---- Errors name their field: InputError.field, and every problem of a form in one pass.
def test_input_error_carries_its_field_and_stays_compatible():
    assert InputError("plain").field is None and str(InputError("plain")) == "plain"
    assert InputError("m", field="mem").field == "mem" and isinstance(InputError("m"), ValueError)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"mem": "lots"}, "mem"),
        ({"script": ""}, "script"),
        ({"job_name": "a b"}, "job_name"),
        ({"workdir": "missing"}, "workdir"),
        ({"colour": "red"}, "colour"),
        ({"partition": "nosuch"}, "partition"),
        ({"gpus": 1}, "gpus"),
        ({"qos": "high"}, "qos"),
        ({"time": "02:00:00"}, "time"),
        ({"cpus": 16, "partition": "batch"}, "cpus"),
    ],
)
def test_validation_errors_name_their_field(workdir, params, field):
    template = hpc.load_template("python-script")
    with pytest.raises(InputError) as raised:
        hpc.validate_params(
            template, {"script": "run.py", **params}, cwd=workdir, cluster=_limits()
        )
    assert raised.value.field == field


def test_locked_value_error_names_the_field(workdir):
    with pytest.raises(InputError) as raised:
        hpc.validate_params(hpc.load_template("jupyter"), {"command": "bash"}, cwd=workdir)
    assert raised.value.field == "command"


def test_form_errors_reports_every_field_in_one_pass(workdir, monkeypatch):
    from unified_framework.hpc import validation

    template = hpc.load_template("python-script")
    values = {"job_name": "bad; rm", "mem": "lots", "cpus": 0, "time": "02:00:00", "qos": "high"}
    calls = []
    real = validation._validate_one
    monkeypatch.setattr(
        validation, "_validate_one", lambda p, *a: calls.append(p.name) or real(p, *a)
    )
    errors = hpc.form_errors(template, values, cwd=workdir, cluster=_limits())
    # One pass: each parameter is checked once (the dashboard used to validate N+1 times).
    assert sorted(calls) == sorted(template.parameters)
    # The cluster's limits are checked for the valid values (time, qos) too.
    assert sorted(errors) == ["cpus", "job_name", "mem", "qos", "script", "time"]
    assert all(error.field == name for name, error in errors.items())
    assert "mem: 'lots' is not a memory size" in str(errors["mem"])
    # validate_params raises the first of them, as before.
    with pytest.raises(InputError) as raised:
        hpc.validate_params(template, values, cwd=workdir, cluster=_limits())
    assert str(raised.value) == str(next(iter(errors.values())))
    assert hpc.form_errors(template, {"script": "run.py"}, cwd=workdir, cluster=_limits()) == {}
