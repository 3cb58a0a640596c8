"""The command-line tools, installed as console scripts (``danet-predict``, ``danet-export``, ``danet-convert``,
``danet-import``, ``danet-demo``, ``danet-benchmark``, ``danet-prepare-cityscapes``, ``danet-make-synthetic``);
``tools/*.py`` in a checkout run the same ``main``."""
