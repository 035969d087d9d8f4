"""Jobs room: the end-to-end runs the CLI and `make` start.

training (validate, train, evaluate, register with evidence), monitoring (month-by-month monitoring
of the champion, in one process or on Dask), recalibrate (refit the calibration layer on matured data
and register a challenger).
"""
