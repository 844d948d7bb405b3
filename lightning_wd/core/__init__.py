"""The core layer (torch and lightning only): grouping with its audit, schemes, schedules, statistics,
the optimizer factory, retrofitting, and the ``WeightDecay`` callback. Nothing here imports MLflow,
Optuna, the tracking layer or the apps."""
