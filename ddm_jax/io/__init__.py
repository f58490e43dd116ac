"""Every byte in or out: `safe` (pickle-free, atomic, declared-before-read file I/O), `fits` (the
guarded FITS open), `checkpoint` (Orbax checkpoints), `loaders` (survey files -> `Spectrum`) and
`outputs` (OUT and PREPARED files, FITS catalogues, astropy Tables)."""
