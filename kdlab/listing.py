"""``kdlab list``: the models, methods, datasets and shipped configs, as plain aligned text."""

from __future__ import annotations

import inspect


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, rows)])


def listing(what: str) -> str:
    if what == "models":
        from kdlab.models import count_parameters, create_model, list_models

        rows = [(n, f"{count_parameters(create_model(n, num_classes=100)) / 1e6:.2f}M") for n in list_models()]
        note = ("\nImageNet-scale models by prefix: torchvision:<name> (e.g. torchvision:resnet18), "
                "timm:<name> (e.g. timm:mobilenetv1_100).")
        return _table(rows, ("model", "params@100cls")) + note
    if what == "methods":
        from kdlab.methods import describe_method, list_methods, method_class

        rows = [(n, describe_method(n), method_class(n).paper) for n in list_methods()]
        return _table(rows, ("method", "what it does", "paper"))
    if what == "datasets":
        from kdlab.data import DATASETS

        rows = [(n, (inspect.getdoc(f) or "").splitlines()[0] if inspect.getdoc(f) else "")
                for n, f in DATASETS.items()]
        return _table(rows, ("dataset", "format"))
    if what == "configs":
        from kdlab.config import list_configs

        return "\n".join(list_configs())
    raise ValueError(what)


def print_listing(what: str) -> None:
    print(listing(what))
