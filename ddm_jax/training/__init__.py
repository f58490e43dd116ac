"""Making a checkpoint: the spectral libraries (`synthetic`, `realistic`, `input_pipeline`), the
optimiser and step (`optimizers`, `train_step`), the loop (`train`), the trust calibration
(`calibrate`), named recipes (`recipes`, data) and the run that trains one (`workflow`)."""
