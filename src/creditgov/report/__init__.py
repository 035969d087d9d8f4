"""Report room: self-contained HTML for regulators, reviewers and customers.

pages (the decision batch report, per-decision pages and notices, the index; `render`, the one way a
page is rendered from templates/), monitoring (the drift and recalibration pages).
"""
