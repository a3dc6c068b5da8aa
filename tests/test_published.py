"""Shipped recipes carry their published numbers as data, equal to the tables of methods.md §2.

The tables are parsed here on their own (``../shared/docs/methods.md``; skipped when absent), so
a typo in a recipe, a value in the wrong column, or a recipe of a table cell without its
``published:`` block fails. Comments that quote a published number must agree with the block.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdlab.config import CONFIG_DIR, list_configs, load_config

METHODS_MD = Path(__file__).resolve().parents[1].parent / "shared" / "docs" / "methods.md"

# recipe folder -> the row label of the CIFAR-100 tables (§2.2, §2.3)
CIFAR_ROWS = {"kd": "KD", "fitnet": "FitNet", "at": "AT", "sp": "SP", "cc": "CC", "vid": "VID", "rkd": "RKD",
              "pkt": "PKT", "ab": "AB", "ft": "FT", "fsp": "FSP", "nst": "NST", "crd": "CRD", "crd_kd": "CRD+KD",
              "ofd": "OFD", "reviewkd": "ReviewKD", "dkd": "DKD", "dist": "DIST (τ=4)"}
# recipe folder -> rows of the ImageNet table (§2.6)
KD_MDISTILLER = "KD (as listed in the mdistiller README; a stronger re-run than the original)"
IMAGENET_ROWS = {"kd": ("KD (original)", KD_MDISTILLER),
                 "dkd": ("DKD",), "at": ("AT",), "ofd": ("OFD",), "crd": ("CRD",), "reviewkd": ("ReviewKD",),
                 "dist": ("DIST",), "nkd": ("NKD",), "uskd": ("USKD (self-KD, no teacher)",)}
IMAGENET_PAIRS = {"resnet34_resnet18": "ResNet34→ResNet18", "resnet50_MobileNetV1": "ResNet50→MobileNetV1",
                  "resnet18": "ResNet34→ResNet18", "MobileNetV1": "ResNet50→MobileNetV1"}
SIMKD_ROWS = {"srrl": "SRRL", "semckd": "SemCKD"}


def _number(cell: str) -> float | None:
    """The number of a table cell: ``73.33``, ``71.75±0.30`` (the mean), ``R18: 69.90→70.79`` (the result)."""
    cell = cell.split("→")[-1]
    m = re.search(r"(\d+\.\d+)", cell)
    return float(m.group(1)) if m else None


def _tables() -> dict[str, dict[str, dict[str, str]]]:
    """``{"2.2": {row label: {column label: cell}}}`` for every table of methods.md §2."""
    if not METHODS_MD.is_file():
        pytest.skip(f"{METHODS_MD} is absent (needs the ../shared folder)")
    out: dict[str, dict[str, dict[str, str]]] = {}
    section = None
    header: list[str] | None = None
    for line in METHODS_MD.read_text().splitlines():
        m = re.match(r"### (2\.\d) ", line)
        if m:
            section, header = m.group(1), None
            continue
        if line.startswith("## ") and not line.startswith("## 2"):
            section = None
        if section is None or not line.startswith("|"):
            header = None if not line.startswith("|") else header
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(set(c) <= set("-: ") for c in cells):
            continue
        if header is None:
            header = cells
            continue
        out.setdefault(section, {})[cells[0]] = dict(zip(header[1:], cells[1:]))
    return out


def _legend(section: str) -> dict[tuple[str, str], str]:
    """``(teacher, student) -> column letter`` from the "Columns: A = resnet56→resnet20, ..." line."""
    text = METHODS_MD.read_text()
    part = text[text.index(f"### {section} "):]
    part = part[:part.index("\n|")]
    return {(t, s): letter for letter, t, s in re.findall(r"\b([A-M]) = (\w+)→(\w+)", part)}


@pytest.fixture(scope="module")
def recipes():
    return {name: load_config(name) for name in list_configs()}


@pytest.fixture(scope="module")
def tables():
    return _tables()


def _published(cfg) -> list[float]:
    return [p.value for p in cfg.published]


def test_every_published_block_is_well_formed(recipes):
    with_block = 0
    for name, cfg in recipes.items():
        for p in cfg.published:
            assert p.metric in ("top1", "AP") and p.split == "test", name
            assert isinstance(p.value, float) and 0 < p.value < 100, name
            assert p.source.strip(), f"{name}: a published number without its source"
        with_block += bool(cfg.published)
    assert with_block >= 250


def test_cifar100_pairs_match_the_tables_both_ways(recipes, tables):
    checked = 0
    for section in ("2.2", "2.3"):
        columns = _legend(section)
        assert len(columns) == (7 if section == "2.2" else 6)
        for (teacher, student), letter in columns.items():
            for folder, row in CIFAR_ROWS.items():
                name = f"cifar100/{folder}/{teacher}_{student}"
                want = _number(tables[section].get(row, {}).get(letter, "–"))  # no row: no number
                if name not in recipes:
                    continue
                got = _published(recipes[name])
                if want is None:  # "–" or "N/A": no number may be claimed
                    assert not got, f"{name}: the table has no number, the recipe claims {got}"
                    continue
                assert got == [want], f"{name}: table §{section} {row}/{letter} says {want}, recipe {got}"
                assert f"§{section}, column {letter}" in recipes[name].published[0].source, name
                checked += 1
    assert checked >= 200


def test_cifar100_teachers_and_students_match_section_2_1(recipes, tables):
    checked = 0
    for label, cells in tables["2.1"].items():
        model = label.split(" ")[0]
        name = f"cifar100/ce/{model}"
        if name in recipes:
            assert _published(recipes[name])[0] == _number(cells["top-1"]), name
            checked += 1
    assert checked >= 14


def test_simkd_table_recipes_match_section_2_4(recipes, tables):
    table = tables["2.4"]
    columns = {"resnet8x4": "resnet8x4", "vgg8": "vgg8", "ShuffleV2_1_5": "ShuffleV2×1.5"}
    checked = 0
    for student, col in columns.items():
        pairs = {f"cifar100/simkd/resnet32x4_{student}": "SimKD (f=2, default)",
                 f"cifar100/simkd/resnet32x4_{student}_f4": "SimKD (f=4)",
                 f"cifar100/simkd/resnet32x4_{student}_f8": "SimKD (f=8)",
                 **{f"cifar100/{d}/resnet32x4_{student}": row for d, row in SIMKD_ROWS.items()},
                 **{f"cifar100/compose/simkd_protocol_{m}_resnet32x4_{student}": row
                    for m, row in (("crd", "CRD"), ("fitnet", "FitNet"), ("sp", "SP"), ("at", "AT"), ("vid", "VID"))}}
        if student != "resnet8x4":  # kd/resnet32x4_resnet8x4 is RepDistiller's CE 0.1 + KD 0.9 (§2.2)
            pairs[f"cifar100/kd/resnet32x4_{student}"] = "KD"
        for name, row in pairs.items():
            if name in recipes:
                assert _published(recipes[name]) == [_number(table[row][col])], name
                checked += 1
    assert checked >= 32


def test_imagenet_recipes_match_section_2_6(recipes, tables):
    table = tables["2.6"]
    checked = 0
    for name, cfg in recipes.items():
        ds, folder, stem = name.split("/")
        if ds != "imagenet":
            continue
        got = sorted(_published(cfg))
        if folder == "ce":
            pair = {"resnet34": "ResNet34→ResNet18", "resnet18": "ResNet34→ResNet18",
                    "resnet50": "ResNet50→MobileNetV1", "MobileNetV1": "ResNet50→MobileNetV1"}[stem]
            row = "teacher" if stem in ("resnet34", "resnet50") else "student"
            want = [_number(table[row][pair])]
        elif folder in IMAGENET_ROWS:
            want = sorted(_number(table[row][IMAGENET_PAIRS[stem]]) for row in IMAGENET_ROWS[folder])
        else:  # SimKD, CKD-SW: "not verified" in the table
            want = []
        assert got == want, f"{name}: table §2.6 says {want}, recipe {got}"
        checked += 1
    assert checked >= 26


def test_a_number_quoted_as_published_in_a_comment_is_in_the_block(recipes):
    quoted = 0
    for path in CONFIG_DIR.rglob("*.yaml"):
        if path.name.startswith("_"):
            continue
        comments = " ".join(line for line in path.read_text().splitlines() if line.lstrip().startswith("#"))
        for m in re.finditer(r"published (\d+\.\d+)", comments):
            name = str(path.relative_to(CONFIG_DIR).with_suffix(""))
            assert float(m.group(1)) in _published(recipes[name]), f"{name}: comment says {m.group(1)}"
            quoted += 1
    assert quoted >= 20
