"""(query, positive) pairs where no qrels exist, each written as a BEIR folder that every other
command reads: from a search click log (:mod:`hardneg.positives.clicks`, which also gives
skip-above negatives) or from the documents alone (:mod:`hardneg.positives.synth`)."""

__all__: list[str] = []  # the modules hold the API
