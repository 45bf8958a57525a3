"""MkDocs hook: generate the reference parts of the docs from the code, at build time.

Pages hold markers such as ``<!-- voxelflow:config-reference -->``; :func:`on_page_markdown`
replaces each marker by Markdown generated from the live objects, so the reference never drifts
from the code:

==========================================  ================================================
marker                                      generated from
==========================================  ================================================
``<!-- voxelflow:config-reference -->``     :class:`voxelflow.config.schema.Experiment`
``<!-- voxelflow:registry KIND -->``        a component registry (see :data:`REGISTRIES`)
``<!-- voxelflow:applications -->``         the application registry (what exists now)
``<!-- voxelflow:model-card -->``           :class:`voxelflow.zoo.entry.ModelCard`
``<!-- voxelflow:benchmarks -->``           the docstrings of ``benchmarks/*.py``
==========================================  ================================================

``cli_reference.py`` and ``niftynet_reference.py`` (later hooks) expand the other markers.
The generators are plain functions (tested in ``tests/docs/test_docs.py``) and run without MkDocs:
``python docs/hooks/config_reference.py config`` prints the config reference (or ``networks``,
``benchmarks`` ... any marker name or registry kind), and
``python docs/hooks/config_reference.py --write-reference`` rewrites the committed reference
pages of ``docs/reference/`` (kept fresh by ``tests/docs/test_reference_pages.py``).
"""

from __future__ import annotations

import ast
import html
import importlib
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

MARKER = re.compile(r"<!--\s*voxelflow:([a-z-]+)(?:\s+([a-z_]+))?\s*-->")


def _registry_table() -> dict[str, tuple[str, str, frozenset[str]]]:
    """kind → (module, attribute, arguments the builder supplies), from voxelflow itself."""
    from voxelflow.config.options import REGISTRY_KINDS

    return {k: (v.module, v.attribute, v.fixed) for k, v in REGISTRY_KINDS.items()}


#: registry kind → (module, attribute, arguments the builder supplies, so not listed as options)
REGISTRIES: dict[str, tuple[str, str, frozenset[str]]] = _registry_table()

#: where the generated reference pages are committed (readable without building the site)
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"


@dataclass(frozen=True)
class FieldRow:
    """One documented configuration key."""

    key: str
    type: str
    default: str
    description: str


# ----------------------------------------------------------------------------- config reference


def type_name(annotation: Any) -> str:
    """A short, readable name of a type annotation (``list[int] | None``, ``"a" | "b"``)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "component" if annotation.__name__ == "Component" else "section"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def constraint_text(field: FieldInfo) -> str:
    """Numeric bounds of a field as text (``≥ 0, < 1``), or an empty string."""
    symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = []
    for item in field.metadata:
        for attribute, symbol in symbols.items():
            value = getattr(item, attribute, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    """The default of a field as inline YAML, or ``required``."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return yaml_inline(value)


def yaml_inline(value: Any) -> str:
    """``value`` as one line of flow-style YAML (pydantic models dumped first)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=False)
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    elif isinstance(value, Path):
        value = str(value)
    text = yaml.safe_dump(
        value, default_flow_style=True, allow_unicode=True, sort_keys=False, width=10_000
    )
    return text.strip().removesuffix("...").strip()


def nested_model(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The section model inside an annotation and the key suffix it gets.

    ``FolderInput`` → ``(FolderInput, "")``; ``dict[str, FolderInput] | None`` →
    ``(FolderInput, ".<name>")``. Components are leaves (their keys depend on the name).
    """
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return None if candidate.__name__ == "Component" else (candidate, "")
        if typing.get_origin(candidate) is dict:
            found = nested_model(typing.get_args(candidate)[1])
            if found is not None:
                return found[0], ".<name>" + found[1]
    return None


def iter_fields(model: type[BaseModel], prefix: str = "") -> Iterator[FieldRow]:
    """Every key of ``model`` and of its nested sections, depth first, in declaration order."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        description = field.description or ""
        bounds = constraint_text(field)
        if bounds:
            description = f"{description} ({bounds})"
        yield FieldRow(key, type_name(field.annotation), default_text(field), description)
        nested = nested_model(field.annotation)
        if nested is not None:
            yield from iter_fields(nested[0], prefix=f"{key}{nested[1]}.")


def cell(text: str, *, code: bool = False) -> str:
    """A Markdown table cell: inline code (pipes are safe inside it), or text with pipes escaped."""
    if code and text:
        return f"`` {text} ``" if "`" in text else f"`{text}`"
    return html.escape(text, quote=False).replace("|", "\\|")


def config_reference_markdown(model: type[BaseModel] | None = None) -> str:
    """The configuration reference: the top-level keys, then one table per section."""
    if model is None:
        from voxelflow.config.schema import Experiment

        model = Experiment
    header = "| key | type | default | meaning |\n|---|---|---|---|\n"
    rows = list(iter_fields(model))
    top_lines, sections = [], []
    for name, field in model.model_fields.items():
        row = next(r for r in rows if r.key == name)
        if nested_model(field.annotation) is None:
            top_lines.append(table_row(row))
            continue
        top_lines.append(table_row(FieldRow(name, row.type, f"[below](#{name})", row.description)))
        inner = [r for r in rows if r.key.startswith(f"{name}.")]
        title = f"### {name}\n\n{field.description or ''}\n\n"
        sections.append(title + header + "".join(table_row(r) for r in inner))
    top = "### Top-level keys\n\n" + header + "".join(top_lines)
    return "\n\n".join([top, *sections]) + "\n"


def table_row(row: FieldRow) -> str:
    """One Markdown table line of a :class:`FieldRow`."""
    cells = [
        cell(row.key, code=True),
        cell(row.type, code=True),
        row.default
        if row.default.startswith("[") and "](#" in row.default
        else cell(row.default, code=True),
        cell(row.description),
    ]
    return "| " + " | ".join(cells) + " |\n"


# ----------------------------------------------------------------------------- registries


def load_registry(kind: str) -> Any | None:
    """The registry object of ``kind``, or ``None`` when its module is not in this version."""
    module_name, attribute, _ = REGISTRIES[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise
    return getattr(module, attribute, None)


def option_default(value: Any) -> str:
    """A constructor default as it is written in YAML (tuples as lists, None as null)."""

    def plain(item: Any) -> Any:
        if isinstance(item, (tuple, list)):
            return [plain(v) for v in item]
        return item

    try:
        return yaml_inline(plain(value))
    except yaml.YAMLError:
        return repr(value)


def option_text(obj: Callable[..., Any], skip: frozenset[str]) -> str:
    """Keyword options of a component's constructor as ``name: default`` (required: bare name).

    The options (base-class ones passed through ``**kwargs`` included) come from
    :func:`voxelflow.config.options.signature_options`, as for ``voxelflow list --options``.
    """
    from voxelflow.config.options import signature_options

    return ", ".join(
        o.name if o.required else f"{o.name}: {o.default}" for o in signature_options(obj, skip)
    )


def registry_markdown(kind: str) -> str:
    """A table of a registry's components: name, description and constructor options."""
    if kind not in REGISTRIES:
        raise KeyError(f"expected a registry kind among {sorted(REGISTRIES)}, got {kind!r}")
    registry = load_registry(kind)
    if registry is None:
        return f"*The {kind} registry is not part of this version of voxelflow yet.*\n"
    skip = REGISTRIES[kind][2]
    rows = [(e.name, e.description, option_text(e.obj, skip)) for e in registry.entries()]
    if not any(options for _, _, options in rows):  # e.g. readers: no options to show
        lines = ["| name | description |", "|---|---|"]
        lines += [f"| `{name}` | {cell(text)} |" for name, text, _ in rows]
        return "\n".join(lines) + "\n"
    lines = ["| name | description | options |", "|---|---|---|"]
    lines += [f"| `{n}` | {cell(t)} | {cell(o, code=True)} |" for n, t, o in rows]
    lines += [
        "",
        f"Each option's type, default and meaning: [reference/{kind}.md](reference/{kind}.md) "
        f"(or `voxelflow list {kind} --options NAME`).",
    ]
    return "\n".join(lines) + "\n"


#: the five applications of the design (ARCHITECTURE.md), with what each one maps
APPLICATIONS = {
    "segmentation": "image → class scores; writes label maps in the original geometry",
    "regression": "image → image; writes images in the original geometry",
    "classification": "image → class or scalar; writes a CSV of predictions and probabilities",
    "autoencoder": "image → latent → image; encodes, samples and interpolates",
    "gan": "noise (+ conditioning image) → image; two optimisers",
}


def applications_markdown() -> str:
    """The five applications and whether this version registers each one."""
    registry = load_registry("applications")
    available = set(registry.names()) if registry is not None else set()
    lines = ["| application | what it does | in this version |", "|---|---|---|"]
    for name, summary in APPLICATIONS.items():
        status = "available" if name in available else "planned, not available yet"
        lines.append(f"| `{name}` | {summary} | {status} |")
    extra = sorted(available - set(APPLICATIONS))
    lines.extend(f"| `{name}` | registered by a plugin | available |" for name in extra)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- MkDocs entry point


def model_card_markdown() -> str:
    """The keys of a zoo entry's ``model.yaml`` (:class:`voxelflow.zoo.entry.ModelCard`)."""
    try:
        from voxelflow.zoo.entry import ModelCard
    except ModuleNotFoundError:
        return "*The model zoo is not part of this version of voxelflow yet.*\n"
    header = "| key | type | default | meaning |\n|---|---|---|---|\n"
    return header + "".join(table_row(row) for row in iter_fields(ModelCard))


def benchmarks_markdown(folder: Path | None = None) -> str:
    """The benchmark scripts of ``benchmarks/``: what each measures and how to run it.

    Read from each script's docstring (first line; the command after ``Run:`` when given),
    without importing the scripts.
    """
    folder = folder or Path(__file__).resolve().parents[2] / "benchmarks"
    lines = ["| script | measures | command |", "|---|---|---|"]
    for script in sorted(folder.glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        except SyntaxError:  # a script being edited must not break the docs build
            doc = ""
        summary = doc.strip().split("\n")[0] if doc.strip() else script.stem
        found = re.search(r"Run:\s*`{0,2}([^`\n]+)", doc)
        command = found.group(1).strip() if found else f".venv/bin/python benchmarks/{script.name}"
        lines.append(f"| `{script.name}` | {cell(summary)} | {cell(command, code=True)} |")
    return "\n".join(lines) + "\n"


def reference_pages() -> dict[str, str]:
    """file name → text of the committed reference pages (``docs/reference/``).

    One page per registry (each component's options: type, default, meaning, the same text as
    ``voxelflow list KIND --options NAME``), the configuration keys and the command-line help.
    """
    from voxelflow.config.options import github_table_cells, reference_markdown

    notice = "<!-- Generated by `python docs/hooks/config_reference.py --write-reference`; do not edit. -->"
    pages = {
        "configuration.md": f"# Configuration keys\n\n{notice}\n\n"
        + github_table_cells(config_reference_markdown()),
    }
    cli_hook = Path(__file__).with_name("cli_reference.py")
    namespace: dict[str, Any] = {"__name__": "voxelflow_docs_cli_reference"}
    exec(compile(cli_hook.read_text(encoding="utf-8"), str(cli_hook), "exec"), namespace)
    pages["cli.md"] = f"# Command line\n\n{notice}\n\n{namespace['cli_reference_markdown']()}"
    for kind in REGISTRIES:
        if load_registry(kind) is None:
            continue
        pages[f"{kind}.md"] = reference_markdown(kind)
    index = [
        "# Reference",
        "",
        notice,
        "",
        "Generated from the code; also built into the site.",
        "",
    ]
    index += [f"- [{Path(name).stem}]({name})" for name in sorted(pages)]
    pages["index.md"] = "\n".join(index) + "\n"
    return pages


def write_reference_pages(folder: Path = REFERENCE_DIR) -> list[Path]:
    """Write :func:`reference_pages` into ``folder``, removing stale ``.md`` pages; returns them."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = reference_pages()
    for stale in folder.glob("*.md"):
        if stale.name not in pages:
            stale.unlink()
    written = []
    for name, text in pages.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def render_marker(name: str, argument: str | None) -> str | None:
    """The Markdown that replaces ``<!-- voxelflow:NAME ARGUMENT -->``, or ``None`` when the
    marker belongs to another hook (``cli_reference.py``, ``niftynet_reference.py``)."""
    if name == "config-reference":
        return config_reference_markdown()
    if name == "registry" and argument:
        return registry_markdown(argument)
    if name == "applications":
        return applications_markdown()
    if name == "model-card":
        return model_card_markdown()
    if name == "benchmarks":
        return benchmarks_markdown()
    return None


def expand_markers(markdown: str) -> str:
    """Replace every voxelflow marker of this hook by its generated Markdown."""

    def replace(match: re.Match[str]) -> str:
        generated = render_marker(match.group(1), match.group(2))
        return match.group(0) if generated is None else generated

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs hook event: expand the generated sections of a page."""
    return expand_markers(markdown)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-reference"]:
        for written in write_reference_pages():
            sys.stdout.write(f"{written}\n")
        sys.exit(0)
    which = sys.argv[1] if len(sys.argv) > 1 else "config"
    generators = {
        "config": config_reference_markdown,
        "applications": applications_markdown,
        "model-card": model_card_markdown,
        "benchmarks": benchmarks_markdown,
    }
    generator = generators.get(which, lambda: registry_markdown(which))
    sys.stdout.write(generator())
