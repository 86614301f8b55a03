"""The default multirun directory: a function of the command.

Rerunning a crashed sweep with the same command then lands in the same folders,
where the jobs that finished are skipped (their ``metrics.json`` exists) and the
others resume from their ``last.ckpt``. Each app's entry point adds
``hydra.sweep.dir=runs/<stage>-multirun/<id>`` to a ``-m`` command that names no
sweep directory, before Hydra parses it; being a plain override, it also reaches
jobs that a launcher (submitit) runs in other processes.

``<id>`` is the sorted overrides reduced to letters, digits and ``._-`` (a path
that is itself safe to pass back as an override value), shortened when long, plus
a hash of all of them: two commands that differ in any override never share a
folder, the same command always does. The readable part leaves out the overrides
that say where or how the work runs (``data.root``, ``logger``, ``debug``,
``hydra...``: the keys ``conf/hydra/ficklenet.yaml`` keeps out of Hydra's
``override_dirname``), so the folder, and a stage sweep's wandb group named after
it, reads as what was swept; the hash still covers them.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence

from omegaconf import OmegaConf

_MAX_READABLE = 60
_MULTIRUN_FLAGS = ("-m", "--multirun")


def sweep_id(overrides: Sequence[str]) -> str:
    """``["model.p=0,0.5,0.9", "data.root=/x"]`` → ``model.p-0-0.5-0.9_<8 hex digits>``."""
    items = sorted(str(o) for o in overrides)
    digest = hashlib.sha1("\n".join(items).encode()).hexdigest()[:8]
    named = [o for o in items if not where_or_how(o)]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(named)).strip("-_.")
    if len(readable) > _MAX_READABLE:
        readable = readable[:_MAX_READABLE].rstrip("-_.")
    return f"{readable}_{digest}" if readable else f"defaults_{digest}"


def where_or_how(override: str) -> bool:
    """Whether an override says where or how the work runs rather than what it
    computes: a Hydra setting, or a key of ``conf/hydra/ficklenet.yaml``'s
    ``hydra.job.config.override_dirname.exclude_keys``."""
    key = override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
    return key == "hydra" or key.startswith(("hydra.", "hydra/")) or key in _excluded_keys()


@functools.cache
def _excluded_keys() -> frozenset[str]:
    from ficklenet.config import conf_dir

    hydra_conf = OmegaConf.load(conf_dir() / "hydra" / "ficklenet.yaml")
    return frozenset(hydra_conf.job.config.override_dirname.exclude_keys)


def pin_sweep_dir(argv: Sequence[str], stage: str) -> list[str]:
    """``argv`` (without the program name) with the default sweep directory added
    when it is a multirun that names none; otherwise unchanged."""
    args = list(argv)
    if not any(a in _MULTIRUN_FLAGS for a in args):
        return args
    if any(a.lstrip("+").startswith("hydra.sweep.dir=") for a in args):
        return args
    options, overrides = split_options(args)
    return [*options, *overrides, f"hydra.sweep.dir=runs/{stage}-multirun/{sweep_id(overrides)}"]


# Hydra's command-line options that take a value in the next argument.
_WITH_VALUE = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}


def split_options(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(Hydra's options with their values, the overrides) of a command line, so that
    overrides can be added or reordered without splitting an option from its value
    (``--cfg job``, ``--info defaults``)."""
    options: list[str] = []
    overrides: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and "=" not in arg:
            options.append(arg)
            takes = arg in _WITH_VALUE or arg in ("--info", "-i")
            nxt = args[i + 1] if i + 1 < len(args) else None
            if takes and nxt is not None and not nxt.startswith("-") and "=" not in nxt:
                options.append(nxt)
                i += 1
        elif arg.startswith("-"):
            options.append(arg)  # --cfg=job
        else:
            overrides.append(arg)
        i += 1
    return options, overrides
