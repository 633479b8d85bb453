"""What every training config shares: the model section, the argument string, durations in steps.

A run's config (`experiments/configs/default.py` and its variants) is an `ml_collections`
ConfigDict, overridable field by field with absl's `--config.<field>=<value>`. This module owns
the conventions that make that work for every field, as in big_vision:

  model_config(name, **fields)   `config.model`: the model name and every data field of that
                                 model with its default (read from the module), so that
                                 `--config.model.blur=True` works for any model.
  parse_arg(arg, **spec)         the config file's argument string, `"model=resnet20,smoke"`.
  to_steps(config, name, spe)    `<name>_steps` if set, else `<name>_epochs` times the steps per
                                 epoch: every duration and cadence goes through it.
  check_field_paths(config, ps)  a typo'd field name -> ValueError with the valid names.
  switch_model(config, ...)      `--config.model.name=<other>` resets config.model to the
                                 other model's fields, then applies the other model overrides.
  parse_flags(argv)              absl's flag parsing with both of the above: the entry points'
                                 `app.run(main, flags_parser=parse_flags_or_exit)`.

Optional fields are `ml_collections.config_dict.placeholder(type)`: None means "the default".
"""

from __future__ import annotations

import dataclasses
import difflib
import sys

import jax.numpy as jnp
import ml_collections
from absl import flags
from ml_collections import config_dict, config_flags

from cnn_jax import models

# Model fields the run sets itself: the dataset gives the classes, the engine the batch axis.
FIELDS_SET_BY_THE_RUN = ("num_classes", "axis_name")


def _is_data(value) -> bool:
  """Whether `value` can be a config field: a scalar or a (nested) tuple of scalars."""
  if isinstance(value, (tuple, list)):
    return all(_is_data(item) for item in value)
  return value is None or isinstance(value, (bool, int, float, str))


def model_config(name: str, **fields) -> ml_collections.ConfigDict:
  """`config.model` for model `name`: `{'name': name, <field>: <value>, ...}`.

  Every field of the model whose default is data (numbers, strings, booleans, tuples of them;
  not `act` or a block class) is listed with its default, overridden by `fields`; fields whose
  default is None (`dtype`, ...) are `placeholder(str)` (e.g. 'bfloat16'). `num_classes` and
  `axis_name` are left out: the run sets them.

  Raises:
    ValueError: `name` is not a model, or `fields` names a field it does not have.
  """
  defaults = {field: value for field, value in models.model_fields(name).items()
              if field not in FIELDS_SET_BY_THE_RUN and value is not dataclasses.MISSING
              and _is_data(value)}
  check_names(f"model {name!r}", fields, defaults)
  config = ml_collections.ConfigDict({"name": name})
  for field, value in {**defaults, **fields}.items():
    config[field] = config_dict.placeholder(str) if value is None else value
  return config


def model_arguments(model: ml_collections.ConfigDict) -> tuple[str, dict]:
  """`(name, fields)` of a `config.model`, ready for `get_model(name, **fields)`.

  Raises:
    ValueError: `config.model` holds fields its model does not have (its name was changed
      without its fields), or `dtype` is not a dtype name.
  """
  fields = model.to_dict()
  name = fields.pop("name")
  expected = model_config(name)
  foreign = sorted(set(fields) - set(expected))
  if foreign:
    raise ValueError(
        f"config.model holds fields that model {name!r} does not have: {foreign} (its fields: "
        f"{sorted(set(expected) - {'name'})}). config.model.name was changed without the "
        f"fields: switch models with `config.model = model_config({name!r})` in Python, the "
        f"config argument `model={name}` or `--config.model.name={name}` (both reset the fields)")
  if fields.get("dtype") is not None:
    try:
      fields["dtype"] = jnp.dtype(fields["dtype"])
    except TypeError as error:
      raise ValueError(f"config.model.dtype must name a dtype ('float32', 'bfloat16', ...), got "
                       f"{fields['dtype']!r}") from error
  return name, fields


def check_names(where: str, names, valid, kind: str = "field") -> None:
  """Raises ValueError naming the first of `names` not in `valid`, the nearest valid one, and
  all of them: "config.model has no field 'blurr'; did you mean 'blur'? Valid fields: ..."."""
  valid = sorted(valid)
  for name in names:
    if name not in valid:
      nearest = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
      hint = f"; did you mean {nearest[0]!r}?" if nearest else "."
      raise ValueError(f"{where} has no {kind} {name!r}{hint} Valid {kind}s: {', '.join(valid)}")


def check_field_paths(config: ml_collections.ConfigDict, paths) -> None:
  """Raises ValueError for the first dotted path (`'model.blurr'`) that `config` does not have."""
  for path in paths:
    node, where = config, "config"
    for part in path.split("."):
      if not isinstance(node, ml_collections.ConfigDict):
        raise ValueError(f"{where} is a value, not a section: cannot set {path!r}")
      check_names(where, [part], node.keys())
      node, where = node[part], f"{where}.{part}"


def switch_model(config: ml_collections.ConfigDict, overrides: dict, file_model: str) -> None:
  """After absl's overrides: if `--config.model.name` named another model than the config file's
  `file_model`, resets `config.model` to that model's fields and applies the `model.<field>`
  overrides again (the file's fields belong to the file's model).

  Args:
    config: the config after absl applied `overrides`.
    overrides: the overridden dotted paths and their values, as
      `config_flags.get_override_values` gives them: `{'model.name': 'resnet20', ...}`.
    file_model: the model name the config file (with its argument) set.
  """
  name = overrides.get("model.name")
  if name is None or name == file_model:
    return
  fields = {path.removeprefix("model."): value for path, value in overrides.items()
            if path.startswith("model.") and path != "model.name"}
  with config.unlocked():
    config.model = model_config(name, **fields)


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
  """A config file's argument string as a ConfigDict, big_vision's `parse_arg`.

  `parse_arg("model=resnet20,smoke", model="cnn", smoke=False)` ->
  `{'model': 'resnet20', 'smoke': True}`. `spec` names every allowed key with its default; a
  given value is converted to the type of the default (bool: 'True'/'False', or the bare key for
  True).

  Raises:
    ValueError: a key not in `spec` (with the valid keys), or a value of the wrong type.
  """
  values = dict(spec)
  for item in filter(None, (arg or "").split(",")):
    key, has_value, text = item.partition("=")
    check_names(f"the config argument {arg!r}", [key], spec, kind="key")
    default = spec[key]
    if isinstance(default, bool):
      if has_value and text not in ("True", "False"):
        raise ValueError(f"config argument {key} must be True or False, got {text!r}")
      values[key] = not has_value or text == "True"
    elif not has_value:
      raise ValueError(f"config argument {key!r} needs a value: {key}=<{type(default).__name__}>")
    else:
      try:
        values[key] = type(default)(text)
      except ValueError as error:
        raise ValueError(f"config argument {key} must be a {type(default).__name__}, got "
                         f"{text!r}") from error
  return ml_collections.ConfigDict(values)


def to_steps(config, name: str, steps_per_epoch: int):
  """The duration `name` in steps: `config.<name>_steps` when set, else `config.<name>_epochs`
  times `steps_per_epoch`, rounded down (a tuple of epochs gives a tuple of steps).

  Returns None when neither field is set (or the config has neither).
  """
  steps = config.get(f"{name}_steps")
  if steps is not None:
    return steps
  epochs = config.get(f"{name}_epochs")
  if epochs is None:
    return None
  if isinstance(epochs, (tuple, list)):
    return tuple(int(value * steps_per_epoch) for value in epochs)
  return int(epochs * steps_per_epoch)


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """absl's flag parsing, plus: a misspelled `--config.<field>` is refused with the valid names,
  and `--config.model.name=<other>` resets the model's fields (`switch_model`).

  `flag_values` holds a `config_flags` flag named 'config' (defined with `sys_argv=argv` if
  `argv` is not `sys.argv`).

  Returns:
    The arguments that are not flags.

  Raises:
    ValueError: a `--config.<path>` the config does not have.
  """
  config_flag = flag_values["config"]
  try:
    remaining = flag_values(argv)
  except (AttributeError, KeyError) as error:  # absl's own message is a bare traceback
    paths = [arg[len("--config."):].split("=", 1)[0] for arg in argv
             if arg.startswith("--config.")]
    arguments = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    config = config_flag.parser.parse(arguments[-1] if arguments else config_flag.default)
    try:
      check_field_paths(config, paths)
    except ValueError as unknown:
      if "model.name" in paths:  # --config.model.<field> applies before the switch
        raise ValueError(
            f"{unknown}. The --config.model.<field> flags change the config file's model "
            f"({config.model.name!r}) before --config.model.name switches; to set fields of "
            f"another model, choose it with the config argument instead: "
            f"--config=<file>:model=<name>") from None
      raise
    raise error
  overrides = config_flags.get_override_values(config_flag)
  if "model.name" in overrides:
    file_model = config_flag.parser.parse(config_flag.config_filename).model.name
    switch_model(flag_values.config, overrides, file_model)
  return remaining


def parse_flags_or_exit(argv: list[str]) -> list[str]:
  """`parse_flags`, exiting with absl's one-line message and exit code 2 (a usage error) on a
  bad flag (for `app.run`)."""
  try:
    return parse_flags(argv)
  except (ValueError, flags.Error) as error:
    sys.stderr.write(f"FATAL Flags parsing error: {error}\n")
    sys.exit(2)
