"""Experiments: a grid of datasets x hosts x CF models x alpha x seeds run as one study.

``study.config`` validates a study file (and holds the demo's settings) without loading
torch, so the command line reads it at once; ``study.runner`` (``Study``, ``load_study``)
runs the cells of ``study.cells``; ``study.report`` and ``study.runs_report`` compare cells
or any run folders; ``study.demo`` is a two-cell study on the embedded defaults. Nothing is
imported here, so that reading the config never loads the runner.
"""
