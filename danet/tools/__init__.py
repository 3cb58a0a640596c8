"""The command-line tools, installed as console scripts (``danet-predict``, ``danet-export``, ``danet-convert``,
``danet-import``, ``danet-demo``, ``danet-benchmark``, ``danet-prepare-dataset``, ``danet-prepare-cityscapes``,
``danet-gpu-check``, ``danet-make-synthetic``; the setup.py ``console_scripts`` list is the full one);
``tools/*.py`` in a checkout run the same ``main``."""
