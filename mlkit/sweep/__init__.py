"""Sweeps: a project run many times over a parameter space, as a parent run and its trials.

mlkit.sweep.space     -P values -> dimensions, grid expansion, type checks, trial keys (pure)
mlkit.sweep.study     Optuna: the journal-file study, samplers, pruners (loaded only to drive)
mlkit.sweep.launch    where trials run: one `mlkit run --run-id` supervisor each (or a batch)
mlkit.sweep.driver    the parent run, claiming slots, launching, pruning, resume, Ctrl-C
mlkit.sweep.results   the table of trials (show, report, runs list)
"""
