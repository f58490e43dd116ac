"""What people look at: `plotting` (matplotlib figures of decompositions and fits) and `html`
(`ddm-jax report`: one self-contained page per run)."""
