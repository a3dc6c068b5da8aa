"""The ``kdlab`` command: train, eval, demo, list, bench, sweep, report, cost, export, convert-checkpoint.

Every user error (a :class:`~kdlab.errors.KdlabError`) is printed as one line,
``kdlab: error: ...``, with exit status 2; an interrupted run says how to resume.

``kdlab train --nproc N`` re-launches itself under ``torch.distributed.run`` (torchrun) with N
processes on this machine; a worker restarted by torchrun (``TORCHELASTIC_RESTART_COUNT`` > 0)
resumes its run from ``last.pt`` by itself (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path

from kdlab.errors import KdlabError

EPILOG = "Overrides are key.sub=value pairs, e.g. optim.lr=0.01 method.params.temperature=2"


def _cmd_train(args: argparse.Namespace) -> int:
    from kdlab.config import load_config
    from kdlab.experiment import run_experiment

    extra = {"name": args.name} if args.name else None
    cfg = load_config(args.config, args.overrides, extra=extra)
    resume, overwrite = elastic_start(cfg, args.resume, args.overwrite)
    try:
        summary = run_experiment(cfg, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:
        again = ["kdlab", "train", args.config, *args.overrides, *(["--name", args.name] if args.name else []),
                 "--resume"]
        print(f"\ninterrupted; continue with: {shlex.join(again)}", file=sys.stderr)
        return 130
    from kdlab.engine.distributed import is_main

    if is_main():
        print(json.dumps(summary, indent=2))
    return 0


def elastic_start(cfg, resume: bool, overwrite: bool) -> tuple[bool, bool]:
    """(resume, overwrite) of this start: after a torchrun restart, continue the run the failed attempt left.

    It resumes from ``last.pt`` (or ``init.pt``) when the attempt wrote one, else starts over in place.
    """
    from kdlab.engine.distributed import launch_env

    if launch_env().restart <= 0 or resume:
        return resume, overwrite
    ckpt = Path(cfg.out_dir) / cfg.name / "checkpoints"
    if (ckpt / "last.pt").is_file() or (ckpt / "init.pt").is_file():
        logging.getLogger("kdlab").info("torchrun restart %d: resuming from %s", launch_env().restart, ckpt)
        return True, False
    return False, True


def launch_nproc(argv: list[str], nproc: int, max_restarts: int) -> int:
    """Run ``kdlab <argv>`` (without ``--nproc``) under torchrun with ``nproc`` local processes."""
    if nproc < 1:
        raise KdlabError(f"--nproc must be >= 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"--max-restarts={max_restarts}", "-m", "kdlab", *argv]
    return subprocess.call(cmd)


def _strip_launch_options(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--nproc", "--max-restarts"):
            skip = True
        elif not a.startswith(("--nproc=", "--max-restarts=")):
            out.append(a)
    return out


def _cmd_eval(args: argparse.Namespace) -> int:
    from kdlab.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.target, split=args.split, overrides=args.overrides)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.task == "detection":
        from kdlab.demo_detection import run_detection_demo

        run_detection_demo(root=args.root, epochs=args.epochs, out_dir=args.out, seed=args.seed, full=args.full)
        return 0
    if args.full:
        raise KdlabError("--full only applies to `kdlab demo --task detection` (it adds the ReviewKD+DKD run)")
    from kdlab.demo import run_demo

    run_demo(dataset=args.dataset, root=args.root, epochs=args.epochs, out_dir=args.out,
             teacher=args.teacher, student=args.student, image_size=args.image_size, seed=args.seed)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from kdlab.listing import print_listing

    pair = getattr(args, "pair", None)
    if pair and args.what != "methods":
        raise KdlabError("--pair only applies to `kdlab list methods`")
    print_listing(args.what, pair, num_classes=args.num_classes, image_size=args.image_size, num_data=args.num_data)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from kdlab.engine.checkpoint import convert_trusted

    if not args.trust:
        raise KdlabError("convert-checkpoint fully unpickles the file, which runs any code it holds; add --trust "
                         "only if you trust its source")
    print(convert_trusted(args.checkpoint, args.out))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from kdlab.workflow.bench import run_bench

    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    if args.jobs < 1:
        raise KdlabError(f"--jobs must be >= 1, got {args.jobs}")
    try:
        run_bench(args.grid, args.overrides, jobs=args.jobs, devices=devices, table_only=args.table,
                  baseline=args.baseline, out_dir=args.out, cost=args.cost)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again: finished cells are skipped, killed ones resume",
              file=sys.stderr)
        return 130
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from kdlab.workflow.sweep_run import run_sweep

    if args.jobs < 1 or args.trials < 1:
        raise KdlabError(f"--trials and --jobs must be >= 1, got {args.trials} and {args.jobs}")
    try:
        run_sweep(args.config, args.space, args.overrides, trials=args.trials, jobs=args.jobs, out=args.out)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to continue the study", file=sys.stderr)
        return 130
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from kdlab.workflow.report import make_report

    result = make_report(args.runs, args.out, overrides=args.overrides, tsne_max=args.tsne_points, seed=args.seed,
                         device=args.device)
    for row in result["runs"]:
        extra = "".join(f", {k} {row[k]:.2f}" for k in ("top1_agreement", "mean_kl") if k in row)
        print(f"{row['run']}: test top-1 {row['test_top1']:.2f}, ECE {row['ece']:.2f}%{extra}")
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"report: {args.out}/report.html (figures embedded), {args.out}/summary.md, {args.out}/report.json")
    return 0


def _cmd_cost(args: argparse.Namespace) -> int:
    from kdlab.config import load_config
    from kdlab.workflow.cost import cost_table, model_cost, speed

    cfg = load_config(args.config, args.overrides)
    cost = model_cost(cfg)
    spd = None if args.no_speed else speed(cfg, args.device, steps=args.steps)
    if args.json:
        print(json.dumps({**cost, **(spd or {})}, indent=2))
        return 0
    for label, value in cost_table(cost, spd):
        print(f"{label:>14}  {value}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from kdlab.workflow.export import export_run

    result = export_run(args.run, args.format, args.out, overrides=args.overrides)
    print(f"wrote {result['path']} ({result['format']}, {result['params']} parameters); checked against the "
          f"PyTorch model on {result['checked_on']}: max |diff| {result['max_abs_diff']:.2g} "
          f"<= {result['tolerance']:g}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdlab", description="Knowledge distillation for image classification.",
                                epilog=EPILOG)
    p.add_argument("-v", "--verbose", action="store_true", help="show debug logs and full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a teacher or distill a student from a YAML config", epilog=EPILOG)
    t.add_argument("config", help="a YAML file or a shipped recipe name (see `kdlab list configs`)")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    t.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    t.add_argument("--name", help="run name (folder under out_dir)")
    t.add_argument("--nproc", type=int, default=None, help="train with N processes on this machine (launches "
                   "torchrun; the global batch stays data.batch_size)")
    t.add_argument("--max-restarts", type=int, default=0, help="with --nproc: torchrun restarts after a failed "
                   "process (each resumes from last.pt)")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a run folder or a checkpoint file", epilog=EPILOG)
    e.add_argument("target", help="a run folder (uses its config.yaml and best checkpoint), a kdlab checkpoint "
                   "(carries its config) or a foreign .pt/.pth file (needs student.name=...)")
    e.add_argument("overrides", nargs="*", help="key.sub=value overrides (student.name=..., data.root=...)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.set_defaults(func=_cmd_eval)

    d = sub.add_parser("demo", help="teacher, student, KD and DKD on a small dataset, offline, one table")
    d.add_argument("--task", default="classification", choices=["classification", "detection"],
                   help="detection: Faster R-CNN teacher, student and DKD on tiny-imagenet-det10 "
                        "(--root: the Tiny-ImageNet folder)")
    d.add_argument("--full", action="store_true",
                   help="detection only: also distill with ReviewKD+DKD (a fourth run, about a minute more)")
    d.add_argument("--dataset", default="digits", help="dataset name (default: scikit-learn digits, embedded)")
    d.add_argument("--root", default="data", help="dataset root (unused for digits)")
    d.add_argument("--epochs", type=int, default=None,
                   help="epochs per run (default: per dataset; detection: the students', the teacher "
                        "trains twice as long)")
    d.add_argument("--teacher", default=None, help="teacher model (default: per dataset)")
    d.add_argument("--student", default=None, help="student model (default: per dataset)")
    d.add_argument("--image-size", type=int, default=None, help="resize images to this size")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="runs/demo", help="folder for the four runs")
    d.set_defaults(func=_cmd_demo)

    ls = sub.add_parser("list", help="list models, methods, datasets or configs")
    ls.add_argument("what", choices=["models", "methods", "datasets", "configs"])
    ls.add_argument("--pair", metavar="TEACHER,STUDENT",
                    help="methods only: show the extra trainable parameters each method adds on this pair")
    ls.add_argument("--num-classes", type=int, default=None, help="with --pair: classes (default 100)")
    ls.add_argument("--image-size", type=int, default=None, help="with --pair: input size (default 32)")
    ls.add_argument("--num-data", type=int, default=None, help="with --pair: training-set size (default 50000)")
    ls.set_defaults(func=_cmd_list)

    cv = sub.add_parser("convert-checkpoint", help="rewrite a trusted checkpoint that needs full unpickling as "
                        "plain tensors (loadable safely)")
    cv.add_argument("checkpoint", help="the .pt/.pth file")
    cv.add_argument("--trust", action="store_true", help="I trust this file's source: unpickle it fully, once")
    cv.add_argument("--out", default=None, help="output file (default: <name>.safe.pt beside it)")
    cv.set_defaults(func=_cmd_convert)

    b = sub.add_parser("bench", help="run a grid of configs x seeds and tabulate it against published numbers",
                       epilog=EPILOG)
    b.add_argument("grid", help="a grid YAML file or a shipped grid name (kdlab/grids)")
    b.add_argument("overrides", nargs="*", help="key.sub=value overrides applied to every cell (e.g. data.root=...)")
    b.add_argument("--jobs", type=int, default=1, help="cells run at once (CPU: cores split between them)")
    b.add_argument("--devices", help="GPU ids, e.g. 0,1: one cell per GPU through CUDA_VISIBLE_DEVICES")
    b.add_argument("--table", action="store_true", help="only re-render the table from finished cells")
    b.add_argument("--baseline", help="method for the 95%% CI of the difference (default: the grid's baseline:)")
    b.add_argument("--out", help="parent folder of the bench folder (default: the grid's out_dir, runs/bench)")
    b.add_argument("--cost", action="store_true", help="add cost columns (params, MACs, extra params)")
    b.set_defaults(func=_cmd_bench)

    sw = sub.add_parser("sweep", help="tune a config's hyper-parameters with Optuna on the val split",
                        epilog=EPILOG)
    sw.add_argument("config", help="a YAML file or a shipped recipe name")
    sw.add_argument("overrides", nargs="*", help="key.sub=value overrides applied to every trial")
    sw.add_argument("--space", required=True, help="search-space YAML (file or shipped name in kdlab/sweeps)")
    sw.add_argument("--trials", type=int, default=20, help="finished trials wanted in the study (resumes count)")
    sw.add_argument("--jobs", type=int, default=1, help="trials run at once, each in its own process")
    sw.add_argument("--out", help="sweep folder (default: runs/sweep/<config name>)")
    sw.set_defaults(func=_cmd_sweep)

    r = sub.add_parser("report", help="figures, summary.md and a self-contained HTML page for runs or checkpoints",
                       epilog=EPILOG)
    r.add_argument("runs", nargs="+", help="run folders, kdlab checkpoints or exported .safetensors files")
    r.add_argument("--out", required=True, help="folder for the figures and pages")
    r.add_argument("--tsne-points", type=int, default=500, help="test images sampled for t-SNE (default 500)")
    r.add_argument("--seed", type=int, default=0, help="seed of the t-SNE sample and embedding")
    r.add_argument("--device", default="cpu", help="device for the test-split forward passes (default cpu)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every run's config (e.g. --set data.root=/data); repeatable")
    r.set_defaults(func=_cmd_report)

    c = sub.add_parser("cost", help="parameters, MACs, img/s and peak memory of a config", epilog=EPILOG)
    c.add_argument("config", help="a YAML file or a shipped recipe name")
    c.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    c.add_argument("--device", default=None, help="device for the speed measurement (default: train.device)")
    c.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default 10)")
    c.add_argument("--no-speed", action="store_true", help="only parameters and MACs (no timing)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=_cmd_cost)

    x = sub.add_parser("export", help="export a run's inference model (safetensors, torchscript, onnx), checked",
                       epilog=EPILOG)
    x.add_argument("run", help="a run folder or a kdlab checkpoint file")
    x.add_argument("overrides", nargs="*", help="key.sub=value overrides (e.g. data.root=...)")
    x.add_argument("--format", required=True, choices=["safetensors", "torchscript", "onnx"])
    x.add_argument("--out", default=None, help="output file (default: <run>/export/model.<ext>)")
    x.set_defaults(func=_cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (``--split val data.root=...``)
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        if getattr(args, "nproc", None) is not None:
            argv = list(sys.argv[1:] if argv is None else argv)
            return launch_nproc(_strip_launch_options(argv), args.nproc, args.max_restarts)
        return args.func(args)
    except KdlabError as e:
        if args.verbose:
            raise
        print(f"kdlab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no (full disk, permissions): one line, not a traceback
        if args.verbose:
            raise
        print(f"kdlab: error: {e}; check the path, free space and permissions (-v shows the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

