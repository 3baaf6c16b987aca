"""The run directory: where a training run keeps its resolved config, its metrics log
(JSON lines), its training curves (PNG), optional TensorBoard events, the state it
resumes from, and in the end its checkpoint.

While the run is going, everything is written to `<out>.partial`; at the end that
directory replaces `<out>` in one rename, so `<out>` always holds a finished run and a
run interrupted at any moment can be resumed from `<out>.partial`. Only rank 0 of a
distributed run writes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from mtl_deploy.atomic import replace_directory
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.resume import TrainingState, read_state, write_state

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
STATE = "training-state.safetensors"
TENSORBOARD = "tensorboard"


class RunDirectory:
    """`out` (the finished run) and `work` (the run in progress); `writer` is False on
    ranks other than 0, whose calls then do nothing."""

    def __init__(self, out: str | Path, writer: bool = True):
        self.out = Path(out)
        self.work = self.out.with_name(self.out.name + ".partial")
        self.writer = writer
        self.log_lines = 0  # metrics-log lines of this run so far
        self._tensorboard = None

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """A run that fails or is interrupted before its first saved state cannot be
        resumed: remove its directory, so that nothing is left behind."""
        if kind is not None and self.writer and self.work.is_dir() and not self.state_path.is_file():
            shutil.rmtree(self.work, ignore_errors=True)

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
        return self.resume(config) if resume else self.start(config)

    def start(self, config: dict) -> None:
        """A fresh run: refuse to discard an interrupted one, then write the config."""
        if not self.writer:
            return
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"{self.out} exists and is not a directory; choose another output path")
        if self.work.exists():
            raise InputError(f"an interrupted run is at {self.work}: continue it with --resume {self.out}, "
                             "or delete it to start afresh")
        try:
            self.work.mkdir(parents=True)
            (self.work / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        except OSError as err:
            raise MtlDeployError(f"cannot write to {self.work} ({err.strerror}); choose a writable output path") from None
        self._open_tensorboard()

    def resume(self, config: dict) -> TrainingState:
        """Continue the saved run (an interrupted one, or a finished one to run longer):
        read its state and drop log lines written after that state was saved."""
        source = self.resumable()
        state = read_state(source / STATE)
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
                        info={**info, "log_lines": self.log_lines}, tensors=tensors, best=best)

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
        write_checkpoint(self.work)
        from mtl_deploy.curves import plot_curves

        plot_curves(self.metrics(), self.work / CURVES)
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
