"""RecBole's Config, extended with this plugin's ``properties/`` and with key checking.

Precedence, lowest first: RecBole's own defaults < ``properties/overall.yaml`` < ``properties/model/<model>.yaml``
< ``properties/dataset/<dataset>.yaml`` < ``config_file_list`` (in order) < ``config_dict`` (the command-line
overrides). Unlike RecBole's Config, this one does not read ``sys.argv``: the command line passes its overrides
explicitly, so importing the package under pytest or another program never picks up foreign arguments.
"""

from __future__ import annotations

import difflib
import functools
import re
from importlib import resources
from pathlib import Path

import yaml
from recbole.config import Config

from recbole_mmfusion.registry import get_model

#: keys RecBole reads that no YAML of its own declares
_RECBOLE_RUNTIME_KEYS = {
    "model", "dataset", "nproc", "world_size", "offset", "ip", "port", "local_rank", "single_spec",
    "device", "loss_type", "valid_neg_sample_args", "test_neg_sample_args", "eval_neg_sample_args",
}


class ConfigError(ValueError):
    """A configuration problem, reported to the user as one line."""


def properties_dir() -> Path:
    """The plugin's ``properties/`` folder (installed as the ``recbole_mmfusion.properties`` package)."""
    return Path(str(resources.files("recbole_mmfusion.properties")))


def _yaml_keys(path: Path) -> set[str]:
    with open(path, encoding="utf-8") as handle:
        content = yaml.safe_load(handle) or {}
    return set(content) if isinstance(content, dict) else set()


@functools.lru_cache(maxsize=1)
def known_config_keys() -> frozenset[str]:
    """Every key RecBole or this plugin reads: YAML defaults of both, plus keys RecBole's code reads directly."""
    import recbole

    recbole_root = Path(recbole.__file__).parent
    keys = set(_RECBOLE_RUNTIME_KEYS)
    for root in (recbole_root / "properties", properties_dir()):
        for path in root.rglob("*.yaml"):
            keys |= _yaml_keys(path)
    pattern = re.compile(r"config\[\s*[\"']([A-Za-z_][A-Za-z_0-9]*)[\"']\s*\]")
    for path in recbole_root.rglob("*.py"):
        keys.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(keys)


def check_keys(config: dict, source: str) -> None:
    """Raise :class:`ConfigError` naming the first key of ``config`` that nothing reads."""
    known = known_config_keys()
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}' in {source}{hint}")


def load_yaml_file(path, loader=yaml.SafeLoader) -> dict:
    """Read a YAML config file; a missing file, a syntax error or a non-mapping is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        content = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML in {where}: {problem}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value, not {type(content).__name__}")
    return content


class MMConfig(Config):
    """RecBole ``Config`` that finds plugin models and loads the plugin's ``properties/`` YAMLs.

    Args:
        model (str or type): a model name (plugin models first, then RecBole's) or a model class.
        dataset (str): the dataset name; its files live in ``<data_path>/<dataset>/``.
        config_file_list (list of str, optional): YAML files applied after the properties, in order.
        config_dict (dict, optional): overrides applied last (the command line's ``--key=value``).
        check_keys (bool): reject keys that neither RecBole nor the plugin reads (default: ``True``); the config
            key ``check_config_keys: False`` (in a config file or the overrides) turns the check off too.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, *, check_keys=True):
        self._check_keys = check_keys
        self._key_sources: list[tuple[dict, str]] = []
        if isinstance(model, str):
            model = get_model(model)
        super().__init__(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)

    def _load_config_files(self, file_list):
        file_config_dict = {}
        for file in file_list or []:
            content = load_yaml_file(file, loader=self.yaml_loader)
            self._key_sources.append((content, str(file)))
            file_config_dict.update(content)
        return file_config_dict

    def _load_variable_config_dict(self, config_dict):
        if config_dict:
            self._key_sources.append((config_dict, "the overrides"))
        return super()._load_variable_config_dict(config_dict)

    def _merge_external_config_dict(self):
        super()._merge_external_config_dict()
        # a model of your own may read keys no YAML here declares: check_config_keys: False lets them through
        if self._check_keys and self.external_config_dict.get("check_config_keys", True) is not False:
            for content, source in self._key_sources:
                check_keys(content, source)

    def _load_cmd_line(self):
        return {}

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        root = properties_dir()
        for path in (root / "overall.yaml", root / "model" / f"{model}.yaml", root / "dataset" / f"{dataset}.yaml"):
            if path.is_file():
                content = self._update_internal_config_dict(path) or {}
                if path.parent.name == "dataset":
                    self.parameters["Dataset"] += [k for k in content if k not in self.parameters["Dataset"]]
