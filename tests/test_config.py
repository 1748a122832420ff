from pathlib import Path

import pytest

from unified_framework.config import config_path, load_config
from unified_framework.errors import InputError


def test_defaults_are_absolute_paths(tmp_path):
    config = load_config({"MDLMA_CONFIG": str(tmp_path / "missing.toml"), "HOME": str(tmp_path)})
    assert Path(config["home"]).is_absolute()
    assert config["slurm"]["module"] == "mdlma/unified-framework"


def test_file_then_environment_precedence(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        'home = "/data/alice"\n[slurm]\ndefault_partition = "gpu"\n[dashboard]\nport = 9000\n'
    )
    env = {"MDLMA_CONFIG": str(path)}
    config = load_config(env)
    assert config["home"] == "/data/alice"
    assert config["slurm"]["default_partition"] == "gpu"
    assert config["dashboard"]["port"] == 9000
    env.update(
        MDLMA_HOME="/scratch/alice",
        MDLMA_SLURM_DEFAULT_PARTITION="batch",
        MDLMA_DASHBOARD_PORT="9100",
    )
    config = load_config(env)
    assert config["home"] == "/scratch/alice"
    assert config["slurm"]["default_partition"] == "batch"
    assert config["dashboard"]["port"] == 9100  # coerced to the default's type


def test_xdg_location(tmp_path):
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "mdlma" / "config.toml"


def test_broken_toml_names_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("home = [unclosed\n")
    with pytest.raises(InputError, match=str(path)):
        load_config({"MDLMA_CONFIG": str(path)})
