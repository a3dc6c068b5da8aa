"""Research workflow tools that drive many runs and read what they leave behind.

``kdlab bench`` (:mod:`.bench_grid`, :mod:`.bench_run`, :mod:`.bench_table`, :mod:`.bench_render`)
runs a grid of configs x seeds x override axes as ordinary run folders and tabulates them;
``kdlab sweep`` (:mod:`.sweep_space`, :mod:`.sweep_run`, :mod:`.sweep_report`) tunes a config
with Optuna; ``kdlab report`` (:mod:`.report` and its parts) draws figures, ``kdlab cost``
(:mod:`.cost`) counts parameters, MACs and speed, ``kdlab export`` (:mod:`.export`) writes checked
inference files. They only read run folders (config.yaml, metrics.jsonl, summary.json, checkpoints),
never the trainer's internals, so they work on copied runs and runs from other machines.
"""
