"""The divergence search, one layer: the input domain (:mod:`.domain`), the inputs it tries (the
example's :mod:`.variations`, Hypothesis :mod:`.strategies` over the domain, :mod:`.profiles` of
Hypothesis' settings), the search itself (:mod:`.generalize`) and its counterexamples as code
(:mod:`.replay`). Nothing here imports the engine or the plugin."""
