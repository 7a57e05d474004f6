"""The side-by-side benchmark: every model x every seed on one dataset, split, metric set and evaluator.

    python run_recbole_mm.py --benchmark --models=MMFusion,VBPR,LightGCN,BPR --dataset=amazon-demo --seeds=3 \
        --profile=cpu

Each (model, seed) runs in its own process (so its peak RSS is its own) with the model's YAML, the profile's
``<Model>-<profile>.yaml`` when there is one, then ``--config_files`` and ``--key=value`` (applied to every
model) and ``seed``. A finished run (its JSON in ``runs/``, made with the same settings) is reused unless
``rerun`` is set, so an interrupted benchmark resumes where it stopped. The report is written by
:mod:`recbole_mmfusion.benchmark.report`.

Protocols: ``warm`` (the dataset's own split) and ``cold_items``: the dataset is converted again under the name
``<dataset>-cold<percent>`` with ``cold_item_ratio`` of its items held out of training (all their interactions
in test), and the per-user metrics are also computed on those cold items alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from recbole_mmfusion.config import ConfigError, properties_dir

logger = logging.getLogger(__name__)

PROTOCOLS = ("warm", "cold_items")
DEFAULT_COLD_RATIO = 0.2
FIRST_SEED = 2020  # RecBole's default seed, so seed 1 of a benchmark is the plain run


@dataclass
class Benchmark:
    """What to run. ``models[0]`` is the model under study; the others are its baselines."""

    models: list[str]
    dataset: str
    seeds: list[int]
    protocol: str = "warm"
    profile: str | None = None
    config_files: list[str] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)
    out_dir: Path | None = None
    rerun: bool = False
    baseline: str | None = None

    def __post_init__(self):
        if not self.models:
            raise ConfigError("--models needs at least one model")
        if len(set(m.lower() for m in self.models)) != len(self.models):
            raise ConfigError(f"a model is listed twice in --models: {self.models}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {self.protocol!r}")
        if not self.seeds:
            raise ConfigError("--seeds needs at least one seed")
        if self.protocol == "warm" and float(self.overrides.get("cold_item_ratio", 0) or 0):
            raise ConfigError("cold_item_ratio is set but --protocol is warm: use --protocol=cold_items (the warm "
                              "protocol would convert the dataset itself again with items held out)")
        if self.baseline is not None and self.baseline not in self.models[1:]:
            raise ConfigError(f"--baseline {self.baseline!r} must be one of the baselines {self.models[1:]}")
        for path in self.config_files:
            if not Path(path).is_file():
                raise ConfigError(f"config file {path} not found")
        if self.out_dir is None:
            results = self.overrides.get("results_dir") or "results"
            self.out_dir = Path(results) / "benchmark" / f"{self.dataset}-{self.protocol}"
        self.out_dir = Path(self.out_dir)

    @property
    def cold_ratio(self) -> float:
        return float(self.overrides.get("cold_item_ratio", DEFAULT_COLD_RATIO))

    @property
    def run_dataset(self) -> str:
        """The dataset the runs train on: the dataset itself, or its cold-item variant."""
        if self.protocol == "warm":
            return self.dataset
        seed = int(self.overrides.get("cold_item_seed", 0) or 0)
        percent = f"{self.cold_ratio * 100:g}".replace(".", "p")
        return f"{self.dataset}-cold{percent}" + (f"-seed{seed}" if seed else "")


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> three seeds from 2020; ``"1,7,42"`` -> those seeds."""
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be a count (3) or a list of seeds (1,7,42), not {text!r}") from None
    if len(values) == 1 and "," not in str(text):
        if values[0] < 1:
            raise ConfigError(f"--seeds must be at least 1, not {values[0]}")
        return [FIRST_SEED + k for k in range(values[0])]
    if len(set(values)) != len(values):
        raise ConfigError(f"--seeds lists a seed twice: {text}")
    return values


def _dataset_yaml(name: str) -> Path | None:
    path = properties_dir() / "dataset" / f"{name}.yaml"
    return path if path.is_file() else None


def run_settings(bench: Benchmark, model: str, seed: int) -> tuple[list[str], dict]:
    """``(config files, overrides)`` of one run."""
    files = []
    if bench.profile:
        profile = properties_dir() / "model" / f"{model}-{bench.profile}.yaml"
        if profile.is_file():
            files.append(str(profile))
    overrides = dict(bench.overrides)
    if bench.protocol == "cold_items":
        base = _dataset_yaml(bench.dataset)
        if base is None:
            raise ConfigError(f"the cold_items protocol converts {bench.dataset} again with items held out, which "
                              f"needs its raw files and a properties/dataset/{bench.dataset}.yaml saying how to build it")
        # the base dataset's YAML, under the variant's name; its raw files stay where they are
        files.insert(0, str(base))
        overrides.setdefault("raw_path", str(Path(overrides.get("data_path", "dataset")) / "raw" / bench.dataset))
        overrides["cold_item_ratio"] = bench.cold_ratio
    overrides["seed"] = seed
    overrides.setdefault("checkpoint_dir", str(bench.out_dir / "saved"))
    overrides.setdefault("results_dir", str(bench.out_dir / "records"))
    files += list(bench.config_files)
    return files, overrides


def fingerprint(model: str, dataset: str, protocol: str, files: list[str], overrides: dict) -> str:
    """Hash of the settings that decide a run's result: the model, data, protocol, keys, and the contents of
    every config file it reads (the defaults in ``properties/`` included). Changes to the code or to the dataset's
    files are not seen: pass ``rerun`` then."""
    digest = hashlib.sha256()
    # where the outputs go does not change them
    settings = {key: value for key, value in overrides.items() if key not in ("checkpoint_dir", "results_dir")}
    for part in (model, dataset, protocol, json.dumps(settings, sort_keys=True, default=str)):
        digest.update(part.encode())
        digest.update(b"\0")
    defaults = [properties_dir() / "overall.yaml", properties_dir() / "model" / f"{model}.yaml",
                properties_dir() / "dataset" / f"{dataset}.yaml"]
    for path in [p for p in defaults if p.is_file()] + [Path(p) for p in files]:
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def run_name(model: str, seed: int) -> str:
    return f"{model}-seed{seed}"


def _finished(path: Path, stamp: str) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if record.get("fingerprint") == stamp and path.with_suffix(".npz").is_file() else None


def run_child(spec: dict, log_path: Path) -> tuple[int, float, float]:
    """Run one spec in a child process; ``(exit code, wall seconds, peak RSS MiB)``."""
    spec_path = log_path.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        child = subprocess.Popen([sys.executable, "-m", "recbole_mmfusion.benchmark.one_run", str(spec_path)],
                                 stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024


def run_benchmark(bench: Benchmark) -> dict:
    """Run (or reuse) every (model, seed), then write the report; returns the summary."""
    from recbole_mmfusion.benchmark.report import write_report

    runs_dir = bench.out_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    records, failures = [], []
    total = len(bench.models) * len(bench.seeds)
    for model in bench.models:
        for seed in bench.seeds:
            files, overrides = run_settings(bench, model, seed)
            stamp = fingerprint(model, bench.run_dataset, bench.protocol, files, overrides)
            name = run_name(model, seed)
            path = runs_dir / f"{name}.json"
            done = None if bench.rerun else _finished(path, stamp)
            position = f"[{len(records) + len(failures) + 1}/{total}]"
            if done is not None:
                logger.info("%s %s: finished earlier, reused (%s)", position, name, path)
                records.append(done)
                continue
            logger.info("%s %s on %s: running (log: %s)", position, name, bench.run_dataset,
                        runs_dir / f"{name}.log")
            for stale in (path, path.with_suffix(".npz")):  # a failed rerun must not leave the old result usable
                stale.unlink(missing_ok=True)
            spec = {"model": model, "dataset": bench.run_dataset, "seed": seed, "protocol": bench.protocol,
                    "config_files": files, "overrides": overrides, "label": model, "fingerprint": stamp,
                    "out": str(path.with_suffix(""))}
            code, wall, rss = run_child(spec, runs_dir / f"{name}.log")
            record = _finished(path, stamp)
            if code != 0 or record is None:
                tail = (runs_dir / f"{name}.log").read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
                logger.error("%s %s failed (exit %s):\n  %s", position, name, code, "\n  ".join(tail))
                failures.append(name)
                continue
            record.update(wall_seconds=wall, peak_rss_mib=rss)
            from recbole_mmfusion.fileio import write_json_atomic

            write_json_atomic(path, record)
            logger.info("%s %s: test %s %.4f, %.0f s, peak RSS %.0f MiB", position, name,
                        record["valid_metric"].lower(), record["test_result"].get(record["valid_metric"].lower(),
                                                                                  float("nan")), wall, rss)
            records.append(record)
    if not records:
        raise ConfigError(f"every run failed ({', '.join(failures)}); their logs are in {runs_dir}")
    summary = write_report(bench, records)
    summary["failed_runs"] = failures
    return summary
