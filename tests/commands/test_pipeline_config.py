"""The pipeline config's phase sections are parsed and type-checked by jsonargparse (as LightningCLI
parses ``init_args``) when the config is loaded, before anything trains; ``--print_config`` shows the
resolved config."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from multifeat.errors import ConfigError
from multifeat.pipeline import config as C
from multifeat.pipeline.layout import RunLayout
from multifeat.pipeline.phases import build_phase

REPO = Path(__file__).resolve().parents[2]
TINY = yaml.safe_load((REPO / "tests" / "configs" / "tiny_pipeline.yaml").read_text())


def _write(tmp_path, cfg):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


@pytest.mark.parametrize("override, match", [
    # a value of the wrong type: the key, the class and the expected type are named
    ("phase1.model.lr_g=fast", r"phase1\.model\.init_args\.lr_g: not accepted by multifeat\.phases\.phase1\.Phase1GAN: .*float"),
    ("phase2.model.width=[4]", r"phase2\.model\.init_args\.width: .*FeatureClassifier.*int"),
    # a keyword the class does not take: named, with the keywords it does take
    ("phase1.model.learning_rate=0.1", r"phase1\.model\.init_args: unknown key\(s\) \['learning_rate'\] for "
                                       r"multifeat\.phases\.phase1\.Phase1GAN; its arguments are: .*lr_g"),
    # a keyword that a data module passes on to its parent (**kwargs) is still checked
    ("phase3.data.batch_size=many", r"phase3\.data\.init_args\.batch_size: .*SwitchingDataModule.*int"),
])
def test_bad_init_args_are_refused_at_load_time(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        C.load_config(_write(tmp_path, TINY), [override])


@pytest.mark.parametrize("class_path, match", [
    ("multifeat.phases.phase1.Phase9GAN", r"phase1\.model: module 'multifeat\.phases\.phase1' has no 'Phase9GAN'"),
    ("multifeat.phases.nowhere.Phase1GAN", r"phase1\.model: cannot import 'multifeat\.phases\.nowhere\.Phase1GAN'"),
    ("collections.OrderedDict", r"phase1\.model: class_path 'collections\.OrderedDict' is not a LightningModule"),
    ("multifeat.data.datamodule.AttributeDataModule", r"is not a LightningModule"),
])
def test_unknown_or_wrong_classes_are_refused(tmp_path, class_path, match):
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    cfg["phase1"]["model"] = {"class_path": class_path, "init_args": cfg["phase1"]["model"]}
    with pytest.raises(ConfigError, match=match):
        C.load_config(_write(tmp_path, cfg))


def test_class_path_form_and_bare_form_build_the_same_phase(tmp_path):
    bare = C.load_config(_write(tmp_path, TINY))
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    for phase, (model_cls, data_cls) in C.DEFAULT_CLASSES.items():
        sec = cfg[phase]
        sec["model"] = {"class_path": model_cls, "init_args": sec.get("model") or {}}
        sec["data"] = {"class_path": data_cls, "init_args": sec.get("data") or {}}
    full = C.load_config(_write(tmp_path, cfg))
    layout = RunLayout(tmp_path / "run")
    for phase in ("phase1", "phase2"):
        (m1, d1, t1, _), (m2, d2, t2, _) = build_phase(bare, layout, phase), build_phase(full, layout, phase)
        assert type(m1) is type(m2) and dict(m1.hparams) == dict(m2.hparams)
        assert type(d1) is type(d2) and dict(d1.hparams) == dict(d2.hparams) and t1 == t2


def test_parsed_values_are_converted_as_their_annotation_says(tmp_path):
    from multifeat.phases.phase1 import Phase1GAN

    # YAML reads 1 as an int; lr_g is a float; a Sequence/dict keeps its values
    out = C.parse_init_args(Phase1GAN, {"lr_g": 1, "z_dim": 8}, "x")
    assert out == {"lr_g": 1.0, "z_dim": 8} and isinstance(out["lr_g"], float)


def test_print_config_shows_the_resolved_config(tmp_path):
    cfg_path = _write(tmp_path, TINY)
    r = subprocess.run([sys.executable, "-m", "multifeat.cli", "pipeline", "--config", cfg_path, "--set", "seed=7",
                        "--set", "phase1.model.z_dim=6", "--print_config"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    printed = yaml.safe_load(r.stdout)
    assert printed["seed"] == 7
    model = printed["phase1"]["model"]
    assert model["class_path"] == "multifeat.phases.phase1.Phase1GAN"
    assert model["init_args"]["z_dim"] == 6 and model["init_args"]["lr_g"] == 0.0002  # the class default, shown
    assert printed["phase3"]["data"]["class_path"] == "multifeat.data.switching.SwitchingDataModule"
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_overrides_reach_init_args_of_class_path_sections(tmp_path):
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    cfg["phase1"]["model"] = {"class_path": "multifeat.phases.phase1.Phase1GAN", "init_args": cfg["phase1"]["model"]}
    loaded = C.load_config(_write(tmp_path, cfg), ["phase1.model.z_dim=6", "phase1.model.init_args.g_width=8",
                                                   "phase2.model.width=2", "phase1.trainer.max_epochs=1"])
    assert loaded["phase1"]["model"] == {"class_path": "multifeat.phases.phase1.Phase1GAN",
                                         "init_args": {**TINY["phase1"]["model"], "z_dim": 6, "g_width": 8}}
    assert loaded["phase2"]["model"]["width"] == 2  # a bare mapping keeps its keys where they are
    assert loaded["phase1"]["trainer"]["max_epochs"] == 1
    assert C.route_init_args(loaded, "phase1.model.class_path") == "phase1.model.class_path"
    assert C.route_init_args(loaded, "phase9.model.x") == "phase9.model.x"


def test_the_shipped_configs_load_and_type_check():
    for name in ("method_a.yaml", "celeba/method_a.yaml", "celeba_cpu/method_a.yaml"):
        cfg = C.load_config(REPO / "experiments" / name)
        assert C.resolved_config(cfg)["phase3"]["model"]["class_path"] == "multifeat.phases.phase3.Phase3GAN"
