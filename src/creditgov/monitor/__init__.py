"""Monitoring room: is the champion still right for the book it decides?

drift (PSI, CSI, segment stability, observed or estimated performance, the verdict: stable, watch,
recalibrate, rebuild), reference (the development profile stored with each model), dask (bin counts
of a batch computed partition by partition).
"""
