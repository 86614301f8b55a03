"""What the studies of ``experiments/`` share: statistics over training seeds
(:mod:`.stats`) and reading and writing their run folders (:mod:`.runs`).

Needs the ``experiments`` extra (``pip install -e '.[experiments]'``; ``make install``
includes it) for scipy.
"""
