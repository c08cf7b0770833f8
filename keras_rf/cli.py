"""The ``keras-rf`` command line.

    keras-rf summary MODEL.keras [--batch-size N] [--optimizer adam]
                     [--format table|markdown|html|json] [--input-shape H,W,C]
                     [--custom-objects module:attr] [--plot rf.png]
    keras-rf plan --input 199 --kernel 3 [--pool-every N] [--target-rf R]

The Keras backend is chosen as usual with the KERAS_BACKEND environment variable.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence

FORMATS = ("table", "markdown", "html", "json")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

HTML_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; font-variant-numeric: tabular-nums; }}
th {{ background: #f0f0f0; }}
td:first-child, th:first-child, td:nth-child(2) {{ text-align: left; }}
tr:nth-child(even) td {{ background: #fafafa; }}
</style></head>
<body>
{body}
</body></html>
"""


class CLIError(Exception):
    """A problem to report in one line, without a traceback."""


# ---------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------

def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in re.split(r"[,x ]+", text.strip().strip("()")) if d)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 224,224,3, got {text!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected positive sizes like 224,224,3, got {text!r}")
    return dims


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-rf",
        description="Exact receptive fields and activation memory of Keras 3 models.",
        epilog="The Keras backend is chosen with the KERAS_BACKEND environment variable "
               "(tensorflow, jax or torch).")
    from keras_rf import __version__
    parser.add_argument("--version", action="version", version=f"keras-rf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser(
        "summary", help="receptive field, jump, padding and memory of every layer of a saved model",
        description="Load a saved Keras model (.keras or legacy .h5) and print model.summary()'s "
                    "columns plus receptive field, effective stride (jump), effective padding and "
                    "activation memory per layer.")
    s.add_argument("model", metavar="MODEL", help="a .keras or .h5 model file")
    s.add_argument("--batch-size", type=_positive, default=1,
                   help="samples per batch for the memory columns (default: 1)")
    s.add_argument("--optimizer", default=None,
                   help="estimate training memory with this optimizer (e.g. adam, sgd)")
    s.add_argument("--format", choices=FORMATS, default="table",
                   help="output format (default: table); html is a standalone page")
    s.add_argument("--input-shape", type=_shape, action="append", default=None, metavar="H,W,C",
                   help="input size without the batch axis, for a model saved with unknown "
                        "spatial size (Input(shape=(None, None, 3))); repeat once per input")
    s.add_argument("--custom-objects", action="append", default=[], metavar="MODULE:ATTR",
                   help="import MODULE (a module name or a path/to/file.py) and pass ATTR to "
                        "load_model(custom_objects=...); MODULE alone passes every class in it; "
                        "repeatable")
    s.add_argument("--unsafe", action="store_true",
                   help="load Lambda layers holding Python lambdas (safe_mode=False); "
                        "only for files you trust")
    s.add_argument("--plot", metavar="PNG", default=None,
                   help="also save report.plot() (RF and memory per layer) to this image file")
    s.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "plan", help="how many conv layers until the receptive field covers the input",
        description="Step-by-step image size and receptive field of a stack of stride-1 "
                    "convolutions (optionally with a max-pool every N of them), until the "
                    "receptive field covers the input or reaches --target-rf. Example: "
                    "3x3 'valid' convs take a 199x199 image to 1x1 in 99 layers, RF 199.")
    p.add_argument("--input", type=_positive, required=True, metavar="SIZE",
                   help="image size (square), e.g. 199")
    p.add_argument("--kernel", type=_positive, default=3, help="kernel size (default: 3)")
    p.add_argument("--pool-every", type=_positive, default=None, metavar="N",
                   help="a max-pool after every N convolutions")
    p.add_argument("--pool-size", type=_positive, default=2, help="max-pool size and stride (default: 2)")
    p.add_argument("--target-rf", type=_positive, default=None, metavar="R",
                   help="stop when the receptive field reaches R (default: the input size)")
    p.add_argument("--padding", choices=("valid", "same"), default="valid",
                   help="convolution padding (default: valid)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.set_defaults(func=cmd_plan)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except CLIError as exc:
        print(f"keras-rf: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        return 130
    return 0


# ---------------------------------------------------------------------------
# keras-rf plan
# ---------------------------------------------------------------------------

def cmd_plan(args: argparse.Namespace) -> None:
    from keras_rf.planning import plan

    try:
        result = plan(args.input, args.kernel, pool_every=args.pool_every, target_rf=args.target_rf,
                      padding=args.padding, pool_size=args.pool_size)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.format == "json":
        print(result.to_json(indent=2))
    elif args.format == "html":
        print(HTML_PAGE.format(title="keras-rf plan", body=result.to_html()))
    elif args.format == "markdown":
        print(result.to_markdown())
    else:
        print(result.to_text())


# ---------------------------------------------------------------------------
# keras-rf summary
# ---------------------------------------------------------------------------

def cmd_summary(args: argparse.Namespace) -> None:
    import keras_rf

    custom_objects = load_custom_objects(args.custom_objects)
    model = load_model(args.model, custom_objects, safe_mode=not args.unsafe)
    input_shape = None
    if args.input_shape:
        model, input_shape = with_input_shape(model, args.input_shape, custom_objects)
    kwargs: dict[str, Any] = {"batch_size": args.batch_size, "input_shape": input_shape}
    if args.optimizer is not None:
        kwargs["optimizer"] = args.optimizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report carries its own warnings
        try:
            report = keras_rf.rf_summary(model, print_fn=lambda line: None, **kwargs)
        except keras_rf.ModelNotReadyError as exc:
            raise CLIError(f"{exc} (from the command line: --input-shape H,W,C)") from None
        except (ValueError, TypeError) as exc:
            if args.optimizer is not None and "optimizer" in str(exc).lower():
                raise CLIError(f"--optimizer {args.optimizer}: {exc}") from None
            raise
    if args.format == "json":
        print(report.to_json(indent=2))
    elif args.format == "html":
        print(HTML_PAGE.format(title=f"keras-rf: {report.model_name}", body=report.to_html()))
    elif args.format == "markdown":
        print(report.to_markdown())
    else:
        print(report.to_text())
        hint = _unknown_size_hint(report)
        if hint:
            print(hint)
    if args.plot:
        fig = report.plot()
        fig.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"Saved the plot to {args.plot}", file=sys.stderr)


def _unknown_size_hint(report) -> Optional[str]:
    if any(None in tuple(s[1:]) for s in report.input_shapes):
        shapes = ", ".join(str(tuple(s)) for s in report.input_shapes)
        return (f"Note: the model's input {shapes} has unknown sizes, so memory is '?'. "
                "Pass --input-shape H,W,C to analyse it at one size.")
    return None


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

def load_custom_objects(specs: Sequence[str]) -> dict[str, Any]:
    """``["pkg.layers:MyLayer", "path/to/file.py:Other", "module"]`` -> custom_objects dict."""
    objects: dict[str, Any] = {}
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        if not module_name:
            raise CLIError(f"--custom-objects {spec!r}: expected module:attr, e.g. my_layers:MyLayer")
        module = _import(module_name, spec)
        if attr:
            if not hasattr(module, attr):
                public = [n for n in dir(module) if not n.startswith("_")]
                raise CLIError(f"--custom-objects {spec!r}: module '{module.__name__}' has no "
                               f"attribute '{attr}' (it has: {', '.join(public[:20])})")
            found = {attr: getattr(module, attr)}
        else:
            found = {name: obj for name, obj in vars(module).items()
                     if not name.startswith("_") and inspect.isclass(obj)
                     and getattr(obj, "__module__", None) == module.__name__}
        for name, obj in found.items():
            if isinstance(obj, dict):
                objects.update(obj)
                continue
            objects[name] = obj
            registered = _registered_name(obj)
            if registered:
                objects[registered] = obj
    return objects


def _registered_name(obj) -> Optional[str]:
    try:
        import keras
        return keras.saving.get_registered_name(obj)
    except Exception:  # noqa: BLE001 - not a class or function keras knows how to name
        return None


def _import(module_name: str, spec: str):
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise CLIError(f"--custom-objects {spec!r}: no such file: {path}")
        name = path.stem
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise CLIError(f"--custom-objects {spec!r}: importing {path} failed: "
                           f"{type(exc).__name__}: {exc}") from None
        return module
    cwd = os.getcwd()
    if cwd not in sys.path:  # a console script does not see the current directory
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise CLIError(f"--custom-objects {spec!r}: cannot import '{module_name}' ({exc}); run "
                       "from the folder that holds it, set PYTHONPATH, or give a file path "
                       "(path/to/layers.py:MyLayer)") from None
    except Exception as exc:
        raise CLIError(f"--custom-objects {spec!r}: importing '{module_name}' failed: "
                       f"{type(exc).__name__}: {exc}") from None


def check_model_file(path: Path) -> str:
    """'keras' or 'h5' if ``path`` looks like a model file Keras 3 can load; else CLIError."""
    if not path.exists():
        raise CLIError(f"{path}: no such file")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise CLIError(f"{path} is a TensorFlow SavedModel folder; Keras 3 loads only .keras "
                           "and .h5 files. Re-save the model with model.save('model.keras').")
        raise CLIError(f"{path} is a folder, not a .keras or .h5 model file")
    with open(path, "rb") as f:
        head = f.read(8)
    name = path.name.lower()
    if name.endswith(".weights.h5"):
        raise CLIError(f"{path} holds only weights (model.save_weights), not the architecture; "
                       "keras-rf needs a whole model saved with model.save('model.keras')")
    is_zip, is_hdf5 = zipfile.is_zipfile(path), head == _HDF5_SIGNATURE
    if name.endswith(".keras"):
        if not is_zip:
            raise CLIError(f"{path} is not a Keras model: a .keras file is a zip archive "
                           "written by model.save('model.keras')")
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise CLIError(f"{path} is a zip file but not a Keras model (no config.json inside)")
        return "keras"
    if name.endswith((".h5", ".hdf5")):
        if not is_hdf5:
            raise CLIError(f"{path} is not a Keras model: not an HDF5 file")
        return "h5"
    kind = "a zip archive" if is_zip else "an HDF5 file" if is_hdf5 else "not a model file"
    raise CLIError(f"{path}: unsupported file type ({kind}); keras-rf reads models saved as "
                   ".keras (model.save('model.keras')) or legacy .h5")


_MISSING_CLASS = [
    re.compile(r"Could not locate (?:class|function) '([^']+)'"),
    re.compile(r"Unknown (?:layer|object|activation|initializer|regularizer|constraint|loss|metric)"
               r"(?: type)?: '?([\w.>]+)'?"),
]


def load_model(path: str, custom_objects: Optional[dict] = None, safe_mode: bool = True):
    """``keras.saving.load_model`` with one-line errors that say what to do."""
    file = Path(path)
    check_model_file(file)
    import keras

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(file, custom_objects=custom_objects or None,
                                            compile=False, safe_mode=safe_mode)
    except Exception as exc:  # noqa: BLE001 - every loading error becomes a CLIError
        raise CLIError(_explain_load_error(file, exc)) from None
    if not isinstance(model, keras.Model):
        raise CLIError(f"{file} holds a {type(model).__name__}, not a keras.Model")
    return model


def _explain_load_error(file: Path, exc: Exception) -> str:
    text = str(exc)
    for pattern in _MISSING_CLASS:
        match = pattern.search(text)
        if match:
            name = match.group(1).split(">")[-1]
            module = re.search(r"'module': '([\w.]+)', 'class_name': '" + re.escape(name) + "'", text)
            module_name = module.group(1) if module and module.group(1) != "__main__" else "my_module"
            return (f"{file} uses a custom class '{name}' that keras-rf cannot find. Pass the "
                    f"module that defines it: --custom-objects {module_name}:{name} (a module "
                    f"importable from the current folder or PYTHONPATH, or path/to/file.py:{name})")
    if "safe_mode" in text and "lambda" in text.lower():
        return (f"{file} has a Lambda layer holding Python code, which Keras does not load by "
                "default. If you trust the file, add --unsafe.")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"could not load {file} as a Keras model: {type(exc).__name__}: {first[:500]}"


# ---------------------------------------------------------------------------
# --input-shape: rebuild a model saved with unknown spatial size
# ---------------------------------------------------------------------------

def with_input_shape(model, shapes: Sequence[tuple], custom_objects: Optional[dict] = None):
    """--input-shape: :func:`keras_rf.reshaping.with_input_shape` with one-line errors.
    Returns (model, input_shape for analyze or None)."""
    from keras_rf.reshaping import with_input_shape as rebuild
    try:
        return rebuild(model, shapes, custom_objects)
    except ValueError as exc:
        raise CLIError(f"--input-shape: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
