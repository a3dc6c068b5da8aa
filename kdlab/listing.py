"""``kdlab list``: the models, methods, datasets and shipped configs, as plain aligned text."""

from __future__ import annotations

import inspect


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, rows)])


REASON_WIDTH = 100  # a construction error is cut to this many characters in the table


def _extra_parameters(name: str, teacher: str, student: str, facts: dict) -> str:
    """Extra trainable parameters method ``name`` adds on (teacher, student), or why it cannot."""
    from kdlab.errors import KdlabError
    from kdlab.methods import create_distiller, method_class, method_defaults
    from kdlab.models import create_model

    try:
        accepted = method_defaults(name)
        params = {k: v for k, v in facts.items() if k in accepted}
        s = create_model(student, num_classes=facts["num_classes"])
        t = create_model(teacher, num_classes=facts["num_classes"]) if method_class(name).uses_teacher else None
        return f"{create_distiller(name, student=s, teacher=t, **params).extra_parameters():,}"
    except Exception as e:  # a method that cannot serve this pair: show its reason, keep listing
        msg = str(e).splitlines()[0] if str(e) else ""
        reason = msg if isinstance(e, KdlabError) else f"{type(e).__name__}: {msg}".rstrip(": ")
        return "n/a: " + (reason if len(reason) <= REASON_WIDTH else reason[:REASON_WIDTH - 3] + "...")


def method_parameters(pair: str, num_classes: int = 100, image_size: int = 32, num_data: int = 50000) -> str:
    """Table of every method's extra trainable parameters for ``pair`` = "teacher,student"."""
    from kdlab.errors import KdlabError
    from kdlab.methods import describe_method, list_methods
    from kdlab.models import check_model_name

    names = [p.strip() for p in pair.split(",")]
    if len(names) != 2 or not all(names):
        raise KdlabError(f"--pair must be 'teacher,student' (e.g. resnet32x4,resnet8x4), got {pair!r}")
    for n in names:
        check_model_name(n)
    teacher, student = names
    facts = {"num_classes": num_classes, "image_size": image_size, "num_data": num_data}
    rows = [(n, _extra_parameters(n, teacher, student, facts), describe_method(n)) for n in list_methods()]
    head = (f"extra trainable parameters on {teacher} -> {student} ({num_classes} classes, {image_size} px, "
            f"num_data {num_data}; the student itself is not counted)\n")
    return head + _table(rows, ("method", "extra params", "what it does"))


def listing(what: str, pair: str | None = None, **facts: int) -> str:
    if what == "models":
        from kdlab.models import count_parameters, create_model, list_models

        rows = [(n, f"{count_parameters(create_model(n, num_classes=100)) / 1e6:.2f}M") for n in list_models()]
        note = ("\nImageNet-scale models by prefix: torchvision:<name> (e.g. torchvision:resnet18), "
                "timm:<name> (e.g. timm:mobilenetv1_100).")
        return _table(rows, ("model", "params@100cls")) + note
    if what == "methods":
        from kdlab.methods import describe_method, list_methods, method_class

        if pair:
            return method_parameters(pair, **{k: v for k, v in facts.items() if v is not None})
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


def print_listing(what: str, pair: str | None = None, **facts: int) -> None:
    print(listing(what, pair, **facts))
