"""The run directory: where a training run keeps its resolved config, its metrics log
(JSON lines), its training curves (PNG), optional TensorBoard events, the state it
resumes from, and in the end its checkpoint.

While the run is going, everything is written to `<out>.partial`; at the end that
directory replaces `<out>` in one atomic swap, so `<out>` always holds a finished run and
a run interrupted at any moment can be resumed from `<out>.partial`. Only rank 0 of a
distributed run writes, and one process at a time owns a run directory (`OutputLock`):
a second run, or a second `--resume`, is refused and touches nothing. The saved state is
bound to its run (a fingerprint of the config and the data it reads), so a state copied
from another run is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from mtl_deploy.atomic import (OutputLock, check_output, make_tree_readable, recover_siblings, replace_directory,
                               sha256_file)
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.runs.state import TrainingState, read_state, write_state

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
STATE = "training-state.safetensors"
TENSORBOARD = "tensorboard"
CHECKPOINT_MANIFEST = "manifest.json"  # written last into the run, when it finishes
# what a resumed run may change: train longer, save its state more or less often, move to
# another device (a run begun on a GPU continues on the CPU, and the other way round)
EXTENDABLE = ("meta.iterations", "train.epochs", "meta.checkpoint_every", "train.checkpoint_every",
              "meta.device", "train.device")


def data_paths(config: dict) -> list[str]:
    """The files or folders a run config reads its data from."""
    return [section["path"] for section in (config.get("data"), config.get("meta"))
            if isinstance(section, dict) and section.get("path")]


def run_fingerprint(config: dict) -> str:
    """sha256 of what makes a run this run: its config (less what a resume may extend) and
    the data it reads (file contents; a folder's file names, sizes and times)."""
    digest = hashlib.sha256()
    fields = {f"{section}.{key}": value for section, values in config.items() if isinstance(values, dict)
              for key, value in values.items() if f"{section}.{key}" not in EXTENDABLE}
    digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name in data_paths(config):
        path = Path(name)
        if path.is_file():
            digest.update(sha256_file(path).encode())
        elif path.is_dir():
            for root, _, files in sorted(os.walk(path)):
                for file in sorted(files):
                    stat = os.stat(os.path.join(root, file))
                    digest.update(f"{os.path.relpath(os.path.join(root, file), path)}:{stat.st_size}:"
                                  f"{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


class RunDirectory:
    """`out` (the finished run) and `work` (the run in progress); `writer` is False on
    ranks other than 0, whose calls then do nothing."""

    def __init__(self, out: str | Path, writer: bool = True):
        self.out = Path(os.path.abspath(out))
        self.work = self.out.with_name(self.out.name + ".partial")
        self.writer = writer
        self.log_lines = 0  # metrics-log lines of this run so far
        self.fingerprint = ""  # of the run's config and data, set by `open`
        self._created = False  # this process made `work` (only then may it remove it)
        self._lock = OutputLock(self.out)
        self._tensorboard = None

    def __enter__(self) -> "RunDirectory":
        """Own the run directory (refused, touching nothing, while another process does),
        and finish what a run killed while putting its result in place left half done."""
        if self.writer:
            self._lock.acquire()
            try:
                self._recover()
            except BaseException:
                self._lock.release()
                raise
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """A run that fails or is interrupted before its first saved state cannot be
        resumed: remove the directory it made, so that nothing is left behind. TensorBoard's
        writer thread is stopped first: it would write into the removed directory."""
        try:
            if self._tensorboard is not None:
                self._tensorboard.close()
                self._tensorboard = None
            if kind is not None and self._created and self.work.is_dir() and not self.state_path.is_file():
                shutil.rmtree(self.work, ignore_errors=True)
        finally:
            self._lock.release()

    def _recover(self) -> None:
        """`work` holding a finished run means `finish` was killed: before the swap (the new
        run, put in place now) or after it (the old run, newer at `out`, removed)."""
        recover_siblings(self.out)
        finished = self.work / CHECKPOINT_MANIFEST
        if not finished.is_file():
            return
        current = self.out / CHECKPOINT_MANIFEST
        if current.is_file() and current.stat().st_mtime_ns >= finished.stat().st_mtime_ns:
            shutil.rmtree(self.work)
        else:
            replace_directory(self.work, self.out)

    @property
    def state_path(self) -> Path:
        return self.work / STATE

    def resumable(self) -> Path:
        """The directory a resumed run continues from: an interrupted run, else a finished one."""
        for directory in (self.work, self.out):
            if (directory / STATE).is_file():
                return directory
        raise InputError(f"no resumable run at {self.out} (no {STATE} in it or in {self.work.name})")

    def saved_config(self) -> dict:
        source = self.resumable()
        try:
            return json.loads((source / CONFIG).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise MtlDeployError(f"{source / CONFIG} is missing or corrupt ({err})") from None

    def open(self, config: dict, resume: bool) -> TrainingState | None:
        """Begin the run (`start`) or continue it (`resume`, which returns the saved state)."""
        self.fingerprint = run_fingerprint(config)
        return self.resume(config) if resume else self.start(config)

    def start(self, config: dict) -> None:
        """A fresh run: refuse an output that is not a run of ours or that holds the data,
        and to discard an interrupted run; then write the config."""
        if not self.writer:
            return
        check_output(self.out, "checkpoint", data_paths(config))
        check_output(self.work, "checkpoint", data_paths(config))
        if self.work.exists():
            raise InputError(f"an interrupted run is at {self.work}: continue it with --resume {self.out}, "
                             "or delete it to start afresh")
        try:
            self.work.mkdir(parents=True)
            self._created = True
            (self.work / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        except OSError as err:
            raise MtlDeployError(f"cannot write to {self.work} ({err.strerror}); choose a writable output path") from None
        self._open_tensorboard()

    def resume(self, config: dict) -> TrainingState:
        """Continue the saved run (an interrupted one, or a finished one to run longer):
        read its state, check that it is this run's, and drop log lines written after it."""
        source = self.resumable()
        state = read_state(source / STATE)
        if state.info.pop("run_fingerprint", None) != self.fingerprint:
            raise MtlDeployError(f"the training state in {source} belongs to another run (its config or data "
                                 "differ from this run's); resume the run it came from, or start afresh")
        self.log_lines = state.info.pop("log_lines")
        if self.writer:
            if source == self.out:
                shutil.copytree(self.out, self.work)
            (self.work / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            kept = self.metrics()[:self.log_lines]
            (self.work / METRICS).write_text("".join(json.dumps(line) + "\n" for line in kept))
            self._open_tensorboard(purge_step=kept[-1]["step"] + 1 if kept else 0)
        return state

    def save_state(self, modules: dict, optimizer, info: dict, tensors: dict | None = None,
                   best: dict | None = None) -> None:
        """The loop's state and its best weights so far, with how many log lines it has
        written (a resume drops later ones)."""
        if self.writer:
            write_state(self.state_path, modules=modules, optimizer=optimizer,
                        info={**info, "log_lines": self.log_lines, "run_fingerprint": self.fingerprint},
                        tensors=tensors, best=best)

    def log(self, record: dict) -> None:
        """Append one line to the metrics log (and its scalars to TensorBoard)."""
        self.log_lines += 1
        if not self.writer:
            return
        with open(self.work / METRICS, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._tensorboard is not None:
            for key, value in flat_scalars(record):
                self._tensorboard.add_scalar(key, value, record["step"])
            self._tensorboard.flush()

    def metrics(self) -> list[dict]:
        path = self.work / METRICS
        if not path.is_file():
            return []
        lines = []
        for text in path.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:  # a line cut short by a kill: the rest is intact
                continue
        return lines

    def finish(self, write_checkpoint: Callable[[Path], None]) -> None:
        """Write the checkpoint and the curves into the run, then put it in place of `out`."""
        if not self.writer:
            return
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        write_checkpoint(self.work)
        from mtl_deploy.plots import plot_curves

        plot_curves(self.metrics(), self.work / CURVES)
        make_tree_readable(self.work)
        replace_directory(self.work, self.out)

    def _open_tensorboard(self, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self._tensorboard = SummaryWriter(str(self.work / TENSORBOARD), purge_step=purge_step)


def flat_scalars(record: dict, prefix: str = ""):
    """(name, number) pairs of a metrics record, nested keys joined by '/'."""
    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, dict):
            yield from flat_scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", value
