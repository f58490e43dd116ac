"""The networks and everything jittable around them, no file I/O: `models` (Flax modules),
`preprocess` (normalisation), `bpt` (demarcation lines, classes), `forward` (the jitted
decomposition of one batch, Monte-Carlo dropout), `inputs` (input checks) and `scoring` (the trust
outputs)."""
