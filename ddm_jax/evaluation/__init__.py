"""Measuring a checkpoint: `evaluate` (synthetic, real and out-of-domain sets beside the targets),
`real_eval` (the committed real spectra and their composites), `ood` (out-of-domain inputs) and
`demo` (the recipe, cached, then `evaluate`)."""
