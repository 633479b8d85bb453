"""Config conventions: the model section, the argument string, durations in steps."""

import dataclasses

import ml_collections
import pytest

from cnn_jax import models
from cnn_jax.train import configuration


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_the_model_section_builds_the_registered_model_unchanged(name):
  fields = configuration.model_config(name).to_dict()
  assert fields.pop("name") == name
  built = models.get_model(name, **fields)
  assert built == models.get_model(name)
  # Every data field is listed; only functions, classes and the run's own fields are not.
  unlisted = {field for field, value in models.model_fields(name).items()
              if field not in fields}
  assert unlisted <= {"num_classes", "axis_name", "act", "block"}


def test_model_fields_are_overridden_and_checked_by_name():
  config = configuration.model_config("cnn", blur=True, features=(4, 8))
  assert config.blur is True and config.features == (4, 8) and config.dtype is None
  config.dtype = "bfloat16"
  name, fields = configuration.model_arguments(config)
  assert name == "cnn" and str(fields["dtype"]) == "bfloat16"
  with pytest.raises(ValueError, match=r"model 'cnn' has no field 'blurr'; did you mean 'blur'"):
    configuration.model_config("cnn", blurr=True)
  config.dtype = "float13"
  with pytest.raises(ValueError, match=r"config.model.dtype must name a dtype .*'float13'"):
    configuration.model_arguments(config)


def test_a_model_name_changed_without_its_fields_is_refused_with_how_to_switch():
  config = configuration.model_config("cnn")
  config.name = "resnet20"
  with pytest.raises(ValueError, match=r"fields that model 'resnet20' does not have: "
                                       r"\[.*'dropout_rates', .*argument `model=resnet20`"):
    configuration.model_arguments(config)


def test_parse_arg_converts_to_the_defaults_types():
  arg = configuration.parse_arg("model=resnet20,smoke,steps=12,rate=0.5", model="cnn",
                                smoke=False, steps=1, rate=0.1)
  assert arg.to_dict() == {"model": "resnet20", "smoke": True, "steps": 12, "rate": 0.5}
  assert configuration.parse_arg(None, model="cnn", smoke=False).to_dict() == {
      "model": "cnn", "smoke": False}
  with pytest.raises(ValueError, match="steps must be a int, got 'many'"):
    configuration.parse_arg("steps=many", steps=1)
  with pytest.raises(ValueError, match=r"no key 'smok'; did you mean 'smoke'"):
    configuration.parse_arg("smok", model="cnn", smoke=False)
  with pytest.raises(ValueError, match=r"'model' needs a value: model=<str>"):
    configuration.parse_arg("model", model="cnn", smoke=False)


def test_durations_in_steps_win_over_epochs_which_round_down():
  config = ml_collections.ConfigDict({"total_epochs": 2.5, "total_steps": None,
                                      "decay_epochs": (1.0, 1.5), "warmup_steps": 7})
  assert configuration.to_steps(config, "total", steps_per_epoch=31) == 77
  assert configuration.to_steps(config, "decay", steps_per_epoch=31) == (31, 46)
  assert configuration.to_steps(config, "warmup", steps_per_epoch=31) == 7
  assert configuration.to_steps(config, "eval_every", steps_per_epoch=31) is None
  config.total_steps = 5
  assert configuration.to_steps(config, "total", steps_per_epoch=31) == 5


def test_a_misspelled_path_names_the_valid_fields():
  config = ml_collections.ConfigDict({"model": {"name": "cnn", "blur": False}, "seed": 0})
  configuration.check_field_paths(config, ["model.blur", "seed"])
  with pytest.raises(ValueError, match=r"config.model has no field 'blr'; did you mean 'blur'\? "
                                       r"Valid fields: blur, name"):
    configuration.check_field_paths(config, ["model.blr"])
  with pytest.raises(ValueError, match=r"config.seed is a value, not a section"):
    configuration.check_field_paths(config, ["seed.x"])


def test_model_fields_include_the_registry_entrys_own_settings():
  fields = models.model_fields("resnet20")
  assert fields["stage_sizes"] == (3, 3, 3) and fields["stem"] == "cifar"
  assert models.model_fields("resnet50")["stage_sizes"] == (3, 4, 6, 3)
  assert fields["num_classes"] == 10 and "parent" not in fields
  assert all(value is not dataclasses.MISSING for value in fields.values())
