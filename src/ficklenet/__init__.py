"""ficklenet: FickleNet stochastic inference + DSRG seeded region growing.

Weakly-supervised semantic segmentation from image-level labels, after
Lee et al., "FickleNet" (CVPR 2019) and Huang et al., "Deep Seeded Region
Growing" (CVPR 2018).
"""

__version__ = "0.1.0"
