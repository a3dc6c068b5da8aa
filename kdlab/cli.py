"""The ``kdlab`` command: train, eval, demo, list.

Every user error (a :class:`~kdlab.errors.KdlabError`) is printed as one line,
``kdlab: error: ...``, with exit status 2; an interrupted run says how to resume.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys

from kdlab.errors import KdlabError

EPILOG = "Overrides are key.sub=value pairs, e.g. optim.lr=0.01 method.params.temperature=2"


def _cmd_train(args: argparse.Namespace) -> int:
    from kdlab.config import load_config
    from kdlab.experiment import run_experiment

    extra = {"name": args.name} if args.name else None
    cfg = load_config(args.config, args.overrides, extra=extra)
    try:
        summary = run_experiment(cfg, resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:
        again = ["kdlab", "train", args.config, *args.overrides, *(["--name", args.name] if args.name else []),
                 "--resume"]
        print(f"\ninterrupted; continue with: {shlex.join(again)}", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from kdlab.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.target, split=args.split, overrides=args.overrides)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.task == "detection":
        from kdlab.demo_detection import run_detection_demo

        run_detection_demo(root=args.root, epochs=args.epochs, out_dir=args.out, seed=args.seed)
        return 0
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
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a run folder or a checkpoint file", epilog=EPILOG)
    e.add_argument("target", help="a run folder (uses its config.yaml and best checkpoint), a kdlab checkpoint "
                   "(carries its config) or a foreign .pt/.pth file (needs student.name=...)")
    e.add_argument("overrides", nargs="*", help="key.sub=value overrides (student.name=..., data.root=...)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.set_defaults(func=_cmd_eval)

    d = sub.add_parser("demo", help="teacher, student, KD and DKD on a small dataset, offline, one table")
    d.add_argument("--task", default="classification", choices=["classification", "detection"],
                   help="detection: Faster R-CNN teacher, student, DKD and ReviewKD+DKD on tiny-imagenet-det10 "
                        "(--root: the Tiny-ImageNet folder)")
    d.add_argument("--dataset", default="digits", help="dataset name (default: scikit-learn digits, embedded)")
    d.add_argument("--root", default="data", help="dataset root (unused for digits)")
    d.add_argument("--epochs", type=int, default=None, help="epochs per run (default: per dataset)")
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

