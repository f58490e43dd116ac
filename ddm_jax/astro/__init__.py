"""Bundled astrophysical tables: the BC03 stellar-population templates (`templates`), and the
photoionisation line grids and dust curves (`nebular`)."""
