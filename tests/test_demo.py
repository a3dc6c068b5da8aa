"""``kdlab demo`` runs its four runs and prints one table (1 epoch each here; the real demo uses more)."""

from kdlab.cli import main


def test_demo_prints_the_table_and_writes_four_runs(tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["teacher"], ["student"], ["kd"],
                                                                                 ["dkd"])]
    assert [r[0] for r in rows] == ["teacher", "student", "kd", "dkd"]
    assert [r[1] for r in rows] == ["resnet20", "resnet8", "resnet8", "resnet8"]
    for r in rows:
        val, test = float(r[4]), float(r[5])
        assert 0.0 <= val <= 100.0 and 0.0 <= test <= 100.0
    (folder,) = list(tmp_path.iterdir())
    for run in ("teacher", "student", "kd", "dkd"):
        assert (folder / run / "summary.json").is_file()
    assert f"runs written to {folder}" in out
