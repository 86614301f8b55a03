"""What the studies of ``experiments/`` share: statistics over training seeds
(:mod:`.stats`), reading and writing their run folders (:mod:`.runs`), and the
benchmarks' median-of-repeats timing (:mod:`.timing`).

Needs the ``experiments`` extra (``pip install -e '.[experiments]'``; ``make install``
includes it) for scipy.
"""
