"""Extract NiftyNet's key defaults from its source (the 0.6.0 wheel) with :mod:`ast`.

NiftyNet cannot be imported here (it needs TensorFlow 1.x), so its ``argparse`` definitions are
read as syntax: every ``parser.add_argument("--key", ..., default=...)`` call inside the
functions that build each config section. The result is committed as
:mod:`voxelflow.niftynet.defaults`; ``tests/config/test_niftynet_defaults.py`` re-checks
it against a wheel found in a local cache (it never downloads).

Regenerate (after ``pip download --no-deps niftynet==0.6.0 -d wheels``)::

    python -m voxelflow.niftynet.wheel wheels/NiftyNet-0.6.0-py2.py3-none-any.whl
"""

from __future__ import annotations

import ast
import contextlib
import os
import pprint
import sys
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["extract_defaults", "find_cached_wheel", "render_module"]

#: function in NiftyNet's source → the INI section whose keys it defines
SECTION_FUNCTIONS = {
    "niftynet/utilities/user_parameters_default.py": {
        "add_application_args": "SYSTEM",
        "add_network_args": "NETWORK",
        "add_training_args": "TRAINING",
        "add_inference_args": "INFERENCE",
        "add_evaluation_args": "EVALUATION",
        "add_input_data_args": "INPUT",
    },
    "niftynet/utilities/user_parameters_custom.py": {
        "__add_segmentation_args": "SEGMENTATION",
        "__add_regression_args": "REGRESSION",
        "__add_classification_args": "CLASSIFICATION",
        "__add_autoencoder_args": "AUTOENCODER",
        "__add_gan_args": "GAN",
        "__add_registration_args": "REGISTRATION",
    },
}
_NO_DEFAULT = None  # argparse's default when ``default=`` is absent


def _constants(tree: ast.Module) -> dict[str, Any]:
    """Module-level ``NAME = <literal or os.path.join(literals)>`` assignments."""
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                with contextlib.suppress(ValueError):  # not a literal: not a default
                    values[target.id] = _value(node.value, values)
    return values


def _value(node: ast.expr, constants: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.path.join":
        return "/".join(_value(arg, constants) for arg in node.args)  # NiftyNet ran on POSIX
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(ast.unparse(node)) from None


def extract_source(sources: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``{section: {key: default}}`` from NiftyNet's two parameter modules' source text."""
    table: dict[str, dict[str, Any]] = {}
    for path, functions in SECTION_FUNCTIONS.items():
        tree = ast.parse(sources[path])
        constants = _constants(tree)
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef) or function.name not in functions:
                continue
            keys = table.setdefault(functions[function.name], {})
            for call in ast.walk(function):
                if not (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "add_argument"
                    and call.args
                    and isinstance(call.args[0], ast.Constant)
                ):
                    continue
                key = str(call.args[0].value).lstrip("-")
                default = next((k.value for k in call.keywords if k.arg == "default"), None)
                keys[key] = _NO_DEFAULT if default is None else _value(default, constants)
    return table


def extract_defaults(wheel: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read the parameter modules out of a NiftyNet wheel and extract ``{section: {key: default}}``.

    Raises:
        FileNotFoundError: the wheel does not exist.
        KeyError: the wheel lacks NiftyNet's parameter modules.
    """
    with zipfile.ZipFile(wheel) as archive:
        sources = {path: archive.read(path).decode("utf-8") for path in SECTION_FUNCTIONS}
    return extract_source(sources)


def find_cached_wheel() -> Path | None:
    """A NiftyNet 0.6.0 wheel already on this machine (``$VOXELFLOW_NIFTYNET_WHEEL``, or the
    pip cache's ``wheels`` folder); ``None`` when there is none. Never downloads."""
    explicit = os.environ.get("VOXELFLOW_NIFTYNET_WHEEL")
    candidates = [Path(explicit)] if explicit else []
    folders = [Path.home() / ".cache" / "pip" / "wheels"]
    for folder in folders:
        if folder.is_dir():
            candidates += sorted(folder.rglob("[Nn]ifty[Nn]et-0.6.0-*.whl"))
    return next((c for c in candidates if c.is_file()), None)


def render_module(table: dict[str, dict[str, Any]], *, origin: str) -> str:
    """The source of :mod:`voxelflow.niftynet.defaults` for ``table``."""
    body = pprint.pformat(table, width=96, sort_dicts=True)
    return (
        '"""NiftyNet 0.6.0\'s key defaults per INI section, extracted from its source with ast.\n\n'
        "Generated by ``python -m voxelflow.niftynet.wheel WHEEL`` from\n"
        f"``{origin}`` (``niftynet/utilities/user_parameters_default.py`` and\n"
        "``user_parameters_custom.py``); do not edit by hand. ``None`` = no default (argparse's\n"
        "None). Section ``INPUT`` holds the keys of every input section (``[T1]``, ``[label]``).\n"
        '"""\n\n'
        "from __future__ import annotations\n\n"
        "from typing import Any\n\n"
        f"NIFTYNET_DEFAULTS: dict[str, dict[str, Any]] = {body}\n"
    )


if __name__ == "__main__":  # pragma: no cover - maintenance script
    wheel = Path(sys.argv[1]) if len(sys.argv) > 1 else find_cached_wheel()
    if wheel is None:
        sys.exit("usage: python -m voxelflow.niftynet.wheel NiftyNet-0.6.0-*.whl")
    target = Path(__file__).with_name("niftynet_defaults.py")
    target.write_text(render_module(extract_defaults(wheel), origin=wheel.name), encoding="utf-8")
    print(f"wrote {target}")
