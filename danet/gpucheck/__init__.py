"""The checks behind ``danet-gpu-check`` (:mod:`danet.tools.gpu_check`, the command line that runs them):
:mod:`.common` (results, tolerances, inputs, peak memory), :mod:`.precision` (which kernels ran in which dtype),
:mod:`.checks_train` (the training paths) and :mod:`.checks_infer` (the forward paths and the exports)."""
