"""Studies: sweeps that train bound presets over seeds, and diagnostics that read finished runs.

Each module prints the tables of the results pages its docstring names (docs/results.md and
docs/studies/*.md); the speed benchmarks are in benchmarks/ (docs/performance.md).

  toy              presets on a 2-D toy over seeds: docs/results.md, "The 2-D toys", and
                   docs/studies/toy.md, toy_datasets.md, toy_mi_diff.md, toy_baselines.md
  stackedmnist     presets on StackedMNIST over seeds, modes and KL per evaluation:
                   docs/results.md, "StackedMNIST", and docs/studies/stackedmnist*.md
  energy_wells     the depths and shapes of a toy energy's 25 wells: docs/studies/toy_mi_diff.md
  fold_precision   a toy generator's folded latents in float32 and float64:
                   docs/studies/toy_baselines.md
  stackedmnist_kl  where a StackedMNIST KL(modes || uniform) comes from:
                   docs/studies/stackedmnist_sv_gp_kl.md, stackedmnist_mi_diff.md
  stackedmnist_model  the energy as a model, from full evaluations (experiments.evaluate):
                   docs/results.md, "p_theta: samples and likelihood"
  toy_checkpoint   restores a toy run for energy_wells and fold_precision
Their --config and --config.KEY=VALUE flags are experiments/cli.py's.
"""
