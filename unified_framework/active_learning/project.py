"""The project folder of the human loop: pool, labelled slices, models, query history.

::

    PROJECT/
      manifest.json        the state (below) and every label file with size and CRC-32
      labels/0_z_12.npy    a labelled slice: uint8 (rows, cols), 255 = unlabelled
      models/round-001.pt  the model trained after round 1 (+ .metrics.jsonl while training)
      .lock                serialises writers (a training job and the Annotate page)

The state (``manifest.json``, written atomically by
:class:`~unified_framework.utils.workdir_manifest.Manifest` *after* the label files it
lists) holds the owner, the volumes and axes of the pool, the class names, the
acquisition settings, the labelled slices (who and when), the pending queries and the
rounds (what was queried, which model was trained on how many slices, held-out Dice).
A kill at any point leaves either the old or the new state; label files written
after the last commit are not listed and are ignored. Opening a project verifies every
listed label file; a missing or damaged one is named in the error.

Projects belong to the user who created them: another user opening one gets an error
(folders are created private, mode 0700), so two users' labels never mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..utils.workdir_manifest import Manifest
from .acquisition import check_function
from .pool import SliceId, SlicePool, check_labels
from .training import RoundConfig

STATE_VERSION = 1


def current_user() -> str:
    """The user name recorded as owner and annotator."""
    return os.environ.get("MDLMA_USER") or getpass.getuser()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def label_file(sid: SliceId) -> str:
    """Name of a slice's label file inside the project (``labels/0_z_12.npy``)."""
    return f"labels/{sid.volume}_{sid.axis}_{sid.index}.npy"


class Project:
    """An active-learning project folder (see the module documentation).

    Use :meth:`create` for a new one and the constructor to open an existing one.

    Raises
    ------
    InputError
        No project there, another owner, a damaged state or label file.
    """

    def __init__(self, folder: str | os.PathLike, *, check_owner: bool = True) -> None:
        self.folder = Path(folder)
        self.manifest = Manifest(self.folder)
        if not self.manifest.load() or self.manifest.state.get("kind") != "mdlma-al-project":
            raise InputError(
                f"{self.folder}: not an active-learning project (mdlma al init creates one)"
            )
        if check_owner and self.owner != current_user():
            raise InputError(
                f"{self.folder}: project of user {self.owner!r}; open your own project "
                "(each user's labels stay apart)"
            )
        bad = self.manifest.verify().bad
        if bad:
            raise InputError(
                f"{self.folder / bad[0]}: label file missing or damaged ({len(bad)} in all); "
                "restore it or remove the slice with mdlma al unlabel"
            )
        self._pool: SlicePool | None = None

    # -- creation ---------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        volumes: Sequence[str | os.PathLike],
        class_names: Sequence[str],
        *,
        axes: str = "z",
        function: str = "entropy",
        batch_size: int = 4,
        config: RoundConfig | None = None,
        held_out: Sequence[tuple[str, str]] = (),
        mc_samples: int = 8,
    ) -> Project:
        """Make a new project folder for ``volumes`` (paths readable by :mod:`unified_framework.io`).

        Raises
        ------
        InputError
            The folder holds a project already, unreadable volumes, fewer than two
            classes, bad settings.
        """
        folder = Path(folder)
        if (folder / "manifest.json").exists():
            raise InputError(f"{folder}: holds a project already; open it or choose another folder")
        if len(class_names) < 2 or len(set(class_names)) != len(class_names):
            raise InputError(
                f"classes: {list(class_names)}; expected at least two distinct class names",
                field="class_names",
            )
        check_function(function)
        if int(batch_size) < 1:
            raise InputError(
                f"batch size {batch_size!r}; expected a positive integer", field="batch_size"
            )
        paths = [str(Path(v).resolve()) for v in volumes]
        pool = SlicePool([_open(p) for p in paths], axes=axes, names=paths)  # checks them
        config = config or RoundConfig()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
        state = {
            "kind": "mdlma-al-project",
            "version": STATE_VERSION,
            "owner": current_user(),
            "created": _now(),
            "volumes": paths,
            "axes": ",".join(pool.axes),
            "class_names": list(class_names),
            "function": function,
            "batch_size": int(batch_size),
            "mc_samples": int(mc_samples),
            "config": asdict(config),
            "held_out": [[str(Path(i).resolve()), str(Path(lab).resolve())] for i, lab in held_out],
            "labelled": {},
            "pending": [],
            "rounds": [],
        }
        manifest = Manifest(folder)
        manifest.commit(state)
        return cls(folder)

    # -- reading ----------------------------------------------------------------------
    @property
    def state(self) -> dict[str, Any]:
        return self.manifest.state

    @property
    def owner(self) -> str:
        return str(self.state.get("owner"))

    @property
    def class_names(self) -> list[str]:
        return list(self.state["class_names"])

    @property
    def config(self) -> RoundConfig:
        return RoundConfig(**self.state["config"])

    @property
    def pool(self) -> SlicePool:
        """The pool (volumes opened lazily)."""
        if self._pool is None:
            self._pool = SlicePool(
                [_open(p) for p in self.state["volumes"]],
                axes=self.state["axes"],
                names=self.state["volumes"],
            )
        return self._pool

    @property
    def labelled(self) -> list[SliceId]:
        return [SliceId.parse(k) for k in self.state["labelled"]]

    @property
    def pending(self) -> list[SliceId]:
        """Queried slices not labelled yet, most informative first."""
        done = self.state["labelled"]
        return [SliceId.parse(k) for k in self.state["pending"] if k not in done]

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return list(self.state["rounds"])

    def latest_model(self) -> Path | None:
        """The newest trained model file, if any."""
        for entry in reversed(self.rounds):
            if entry.get("model") and (self.folder / entry["model"]).is_file():
                return self.folder / entry["model"]
        return None

    def labels(self, sid: SliceId) -> np.ndarray:
        """The stored labels of a labelled slice."""
        if sid.key not in self.state["labelled"]:
            raise InputError(f"slice {sid.key}: not labelled in {self.folder}")
        return np.load(io.BytesIO(self.manifest.read(label_file(sid))), allow_pickle=False)

    def training_slices(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(image, labels) of every labelled slice, in labelling order."""
        return [(self.pool.image(sid), self.labels(sid)) for sid in self.labelled]

    # -- writing ----------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Hold the project's lock, reload the state, yield it; commit it on success."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                self.manifest.load()
                state = dict(self.manifest.state)
                yield state
                self.manifest.commit(state)
            finally:
                self.manifest.close()
                fcntl.flock(handle, fcntl.LOCK_UN)

    def save_labels(
        self, sid: SliceId, labels: np.ndarray, *, by: str | None = None, source: str = "manual"
    ) -> None:
        """Store the labels of one slice (atomically) and mark it labelled.

        Raises
        ------
        InputError
            A slice not in the pool, labels of another shape or outside the class list.
        """
        self.pool.check(sid)
        labels = check_labels(
            labels, len(self.class_names), f"slice {sid.key}", self.pool.slice_shape(sid)
        )
        buffer = io.BytesIO()
        np.save(buffer, labels, allow_pickle=False)
        with self.locked() as state:
            self.manifest.write(label_file(sid), buffer.getvalue())
            state["labelled"] = {
                **state["labelled"],
                sid.key: {"by": by or current_user(), "at": _now(), "source": source},
            }

    def unlabel(self, sid: SliceId) -> None:
        """Forget the labels of a slice."""
        with self.locked() as state:
            labelled = dict(state["labelled"])
            if labelled.pop(sid.key, None) is None:
                raise InputError(f"slice {sid.key}: not labelled in {self.folder}")
            self.manifest.forget([label_file(sid)])
            state["labelled"] = labelled

    def record_query(
        self,
        picked: Sequence[SliceId],
        function: str,
        model: Path | None,
        uncertainty: dict[str, float] | None = None,
    ) -> None:
        """Append a query to the history and make its slices the pending ones.

        ``uncertainty`` (mean entropy of the pool and of the picked slices) goes into
        the round's entry: when the picked slices are hardly more uncertain than the
        pool, more labels add little.
        """
        with self.locked() as state:
            state["pending"] = [s.key for s in picked]
            state["rounds"] = [
                *state["rounds"],
                {
                    "round": len(state["rounds"]) + 1,
                    "queried": [s.key for s in picked],
                    "function": function,
                    "query_model": str(model.relative_to(self.folder)) if model else None,
                    "queried_at": _now(),
                    "labelled_before": len(state["labelled"]),
                    "uncertainty": uncertainty,
                },
            ]

    def record_model(self, model: Path, labelled: int, dice: dict | None) -> None:
        """Note the model trained on ``labelled`` slices in the last round."""
        with self.locked() as state:
            rounds = [dict(r) for r in state["rounds"]] or [{"round": 0, "queried": []}]
            rounds[-1].update(
                model=str(model.relative_to(self.folder)),
                trained_at=_now(),
                labelled_count=labelled,
                dice=dice,
            )
            state["rounds"] = rounds

    def next_model_path(self) -> Path:
        """Where the model of the current round goes."""
        return self.folder / "models" / f"round-{max(len(self.rounds), 1):03d}.pt"


def _open(path: str) -> Any:
    from ..io import read_volume

    volume = read_volume(path, lazy=True, expect_ndim=3)
    return volume.data
