"""Run fairseq's own ``examples/speech_recognition/new/infer.py`` (as installed with fairseq-fixed, unmodified)
on fairseq-prune models:

    python -m fairseq_prune.cli.fairseq_infer task=audio_finetuning task.data=MANIFEST_DIR task.labels=ltr \\
        common_eval.path=CHECKPOINT dataset.gen_subset=test decoding.results_path=OUT common.cpu=true

Arguments are fairseq infer.py's hydra overrides, unchanged. As installed, that script does not run here; this
launcher works around each problem at run time, without editing site-packages and without copying its code:

1. ``examples`` is not importable (fairseq-fixed installs it as ``fairseq/examples``, but ``infer.py`` imports
   ``examples.speech_recognition...``): a temporary folder holding a symlink ``examples`` -> ``fairseq/examples``
   is put first on ``sys.path``. (Putting the ``fairseq`` package folder itself on the path instead would shadow
   the standard library's ``logging`` with ``fairseq/logging``.) If importing fairseq already left another
   folder named ``examples`` imported as a namespace package (fairseq tries ``import
   examples.simultaneous_translation`` at import time, which finds e.g. this repository's ``examples/`` when run
   from its root), that stale entry is dropped from ``sys.modules`` first.
2. ``InferConfig`` uses dataclass instances as field defaults (``decoding: DecodingConfig = DecodingConfig()``),
   which Python >= 3.11 rejects ("mutable default ... use default_factory"): while ``infer.py`` is imported,
   ``dataclasses.dataclass`` is wrapped so that such a default becomes ``field(default_factory=<copy of it>)``.
3. ``@hydra.main(config_path=<pathlib.Path>)`` does not work with hydra 1.3, which needs a string: the launcher
   does not call the decorated ``hydra_main`` but applies ``hydra.main`` itself (config path as a string) to the
   undecorated function (``hydra_main.__wrapped__``), i.e. to fairseq's own code. It registers ``InferConfig``
   in hydra's ConfigStore as ``infer.py``'s ``cli_main`` would (which cannot run: it reads ``.default`` of
   fields that now have default factories).
4. ``conf/infer.yaml`` does not compose with hydra 1.3: a corrected copy is written to a temporary config folder
   (with the rest of ``conf/``), with these changes only:

   * defaults list ``[_fairseq_infer_schema, _self_, task: null, model: null]``: the schema (``InferConfig``)
     is named explicitly instead of relying on deprecated automatic schema matching, and ``_self_`` is placed
     before ``task``, so the selected task config (``task=audio_finetuning``) is not reset by the schema's
     ``task: null``; the ``# @package _group_`` header is dropped;
   * ``common.user_dir``: this package's folder instead of a path on fairseq's authors' machine;
   * ``dataset.required_batch_size_multiple: 1``: with fairseq's default 8, ``batch_by_size`` silently drops
     the last batch when its size is not a multiple of 8, i.e. utterances go undecoded;
   * ``hydra.run.dir: ${decoding.results_path}`` and ``hydra.job.chdir: false``: hydra's log and config go next
     to the result files (upstream: ``${common_eval.results_path}/${dataset.gen_subset}``, a folder named
     ``None/test`` unless set), relative paths keep their meaning, and the results folder exists before
     ``infer.py`` opens files in it; ``decoding.results_path`` defaults to a temporary folder (deleted at exit).

5. ``torch.load`` refuses fairseq checkpoints under torch >= 2.6 (``weights_only``): importing ``fairseq_prune``
   registers the classes they pickle as safe globals (it also registers our model, task and criterion).

Before any of it, the checkpoints ``common_eval.path`` names are read with the reader of the other commands
(:func:`fairseq_prune.io.checkpoints.read_checkpoint`): a missing, empty, truncated or malicious one ends in one
``fairseq_infer: error: ...`` line (exit 2) instead of hydra's "Error executing job" and a bare ``EOFError``, and
nothing (no ``.hydra/``, no ``infer.log``) is left in the results folder.

Everything else, from reading the manifest to writing ``hypo.word``/``wer``, is fairseq's code.
"""
import contextlib
import copy
import dataclasses
import functools
import importlib
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Optional

import fairseq
import yaml

import fairseq_prune
from fairseq_prune.inference.allocator import reuse_freed_memory
from fairseq_prune.io.checkpoints import CheckpointError, read_checkpoint

INFER_MODULE = "examples.speech_recognition.new.infer"
SCHEMA_NAME = "_fairseq_infer_schema"


def fairseq_examples_dir() -> Path:
    """``fairseq/examples`` of the installed fairseq (fairseq-fixed ships it inside the package)."""
    path = Path(fairseq.__file__).resolve().parent / "examples"
    if not (path / "speech_recognition" / "new" / "infer.py").is_file():
        raise FileNotFoundError(f"{path}: fairseq's examples/speech_recognition/new/infer.py is not installed")
    return path


def make_examples_importable(workdir: Path) -> None:
    """Workaround 1: ``import examples`` finds ``fairseq/examples`` through a symlink in ``workdir``."""
    loaded = sys.modules.get("examples")
    if loaded is not None:
        file = getattr(loaded, "__file__", None)
        if file and Path(file).resolve().parent == fairseq_examples_dir():
            return
        if file:
            raise RuntimeError(f"a different 'examples' package is already imported: {loaded!r}")
        # A namespace package: importing fairseq runs "try: import examples.simultaneous_translation", which
        # from a folder that has an examples/ directory (this repository has one) leaves that directory imported
        # as 'examples'. It holds nothing fairseq needs; forget it so that the symlink below is found.
        for name in [m for m in sys.modules if m == "examples" or m.startswith("examples.")]:
            del sys.modules[name]
    link = workdir / "examples"
    link.symlink_to(fairseq_examples_dir(), target_is_directory=True)
    sys.path.insert(0, str(workdir))
    importlib.invalidate_caches()


def _defaults_to_factories(cls: type) -> type:
    """Replace class attributes that are dataclass *instances* (annotated fields) by default factories."""
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, dataclasses.MISSING)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            setattr(cls, name, dataclasses.field(default_factory=functools.partial(copy.deepcopy, value)))
    return cls


@contextlib.contextmanager
def dataclass_instance_defaults_allowed() -> Iterator[None]:
    """Workaround 2: while active, ``@dataclass`` accepts dataclass instances as field defaults (Python >= 3.11
    rejects them) by turning them into default factories that return a copy."""
    original = dataclasses.dataclass

    def patched(cls: Optional[type] = None, /, **kwargs: Any) -> Any:
        def wrap(c: type) -> type:
            return original(_defaults_to_factories(c), **kwargs)

        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = patched
    try:
        yield
    finally:
        dataclasses.dataclass = original


def import_fairseq_infer(workdir: Path) -> ModuleType:
    """fairseq's ``infer.py`` as module ``examples.speech_recognition.new.infer`` (workarounds 1 and 2)."""
    make_examples_importable(workdir)
    if INFER_MODULE in sys.modules:
        return sys.modules[INFER_MODULE]
    with dataclass_instance_defaults_allowed(), warnings.catch_warnings():
        # its module-level @hydra.main(...) (replaced in main()) warns that version_base is not specified
        warnings.filterwarnings("ignore", message=r"(?s).*version_base parameter is not specified")
        return importlib.import_module(INFER_MODULE)


def register_schemas(infer: ModuleType) -> None:
    """Store ``InferConfig`` (as :data:`SCHEMA_NAME`) and its sections in hydra's ConfigStore, as ``infer.py``'s
    ``cli_main`` does (part of workaround 3)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name=SCHEMA_NAME, node=infer.InferConfig)
    for f in dataclasses.fields(infer.InferConfig):
        if f.default_factory is not dataclasses.MISSING:
            cs.store(name=f.name, node=f.default_factory())


def corrected_infer_config(original: Dict[str, Any], user_dir: str, default_results: str) -> Dict[str, Any]:
    """``conf/infer.yaml`` with the changes of workaround 4 (see the module docstring)."""
    cfg = copy.deepcopy(original)
    groups = [d for d in cfg.get("defaults", []) if d not in ("_self_", SCHEMA_NAME)]
    cfg["defaults"] = [SCHEMA_NAME, "_self_"] + groups
    cfg.setdefault("common", {})["user_dir"] = user_dir
    cfg.setdefault("dataset", {})["required_batch_size_multiple"] = 1
    cfg.setdefault("decoding", {})["results_path"] = default_results
    hydra_cfg = cfg.setdefault("hydra", {})
    hydra_cfg.setdefault("run", {})["dir"] = "${decoding.results_path}"
    hydra_cfg.setdefault("job", {})["chdir"] = False
    return cfg


def write_config_dir(workdir: Path, default_results: str) -> Path:
    """A copy of ``infer.py``'s ``conf/`` folder with a corrected ``infer.yaml`` (workaround 4)."""
    source = fairseq_examples_dir() / "speech_recognition" / "new" / "conf"
    conf = workdir / "conf"
    shutil.copytree(source, conf)
    with open(source / "infer.yaml", encoding="utf-8") as f:
        original = yaml.safe_load(f)
    user_dir = str(Path(fairseq_prune.__file__).resolve().parent)
    with open(conf / "infer.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(corrected_infer_config(original, user_dir, default_results), f, sort_keys=False)
    return conf


def checkpoint_paths(argv: List[str]) -> List[str]:
    """The checkpoints the hydra override ``common_eval.path=...`` names (an ensemble: several, split as
    ``infer.py`` splits them)."""
    from fairseq.utils import split_paths

    paths: List[str] = []
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key == "common_eval.path" and value.strip("'\""):
            paths += split_paths(value.strip("'\""))
    return paths


def check_checkpoints(argv: List[str]) -> None:
    """Read every checkpoint of ``argv`` as the other commands do; one error line and exit 2 for a bad one."""
    for path in checkpoint_paths(argv):
        try:
            read_checkpoint(path)
        except CheckpointError as e:
            print(f"fairseq_infer: error: {e} (common_eval.path)", file=sys.stderr)
            sys.exit(2)


def main(argv: Optional[List[str]] = None) -> None:
    """Run fairseq's ``infer.py`` with hydra overrides ``argv`` (default: ``sys.argv[1:]``), once the checkpoints
    it names read."""
    import hydra

    argv = list(sys.argv[1:] if argv is None else argv)
    check_checkpoints(argv)
    reuse_freed_memory()  # large activations keep their pages between batches (inference.allocator)
    with tempfile.TemporaryDirectory(prefix="fairseq-infer-") as tmp:
        workdir = Path(tmp)
        infer = import_fairseq_infer(workdir)
        register_schemas(infer)
        default_results = str(workdir / "results")
        conf = write_config_dir(workdir, default_results)
        if not any(a.startswith("decoding.results_path=") for a in argv):
            print(
                "fairseq_infer: no decoding.results_path given: hypo/ref files go to a temporary folder",
                file=sys.stderr,
            )
        run = hydra.main(config_path=str(conf), config_name="infer", version_base=None)(infer.hydra_main.__wrapped__)
        saved_argv = sys.argv
        sys.argv = [saved_argv[0] if saved_argv else "fairseq_infer"] + argv
        try:
            run()
        finally:
            sys.argv = saved_argv


if __name__ == "__main__":
    main()
