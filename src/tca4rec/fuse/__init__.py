"""The learned fusion: a LightGBM LambdaRank model that re-ranks both experts' candidates.

CF-guided decoding multiplies the two experts with one beta for every row and candidate; the
learned fusion instead ranks the union of the LLM's plain beams and the CF model's top-K
titles with a ranker fit on valid rows (docs/fusion.md). A row costs one beam search plus
one CF pass; the re-ranking itself is a small table of features and a tree ensemble.

``fuse.config`` (``FusionConfig``) is free of torch and LightGBM, so the command line and a
study file validate options at once; ``fuse.features`` builds the candidates and their
features, ``fuse.ranker`` fits and stores the ranker (``Fusion``, ``load_fusion``),
``fuse.fit`` decodes valid rows and fits (``fit_fusion``), ``fuse.apply`` re-ranks decoded
predictions (``fuse_predictions``, ``evaluate_fused``) and ``fuse.recommend`` serves
histories (``FusedRecommender``). Nothing is imported here.
"""
