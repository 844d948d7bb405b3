"""The apps layer: the ``lightning-wd`` command (fit, tune, compare, report), the recipe runner, tuning
and the report. Imports the tracking layer and the core; nothing below imports it."""
