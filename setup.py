"""Install danet-paddle: ``pip install -e .`` (add ``paddlepaddle`` or ``paddlepaddle-gpu`` yourself)."""
from setuptools import find_packages, setup

setup(
    name="danet-paddle",
    version="0.1.0",
    description="DANet (Dual Attention Network, CVPR 2019) for PaddlePaddle: static-graph and dygraph training, "
    "sliding-window multi-scale evaluation, checkpoint conversion.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["danet", "danet.*"]),
    python_requires=">=3.8",
    # paddlepaddle is not listed: the CPU and GPU builds are different packages (paddlepaddle /
    # paddlepaddle-gpu) and pip cannot choose between them. See README "Install".
    install_requires=[
        "numpy",
        "pillow",
        "opencv-python-headless",
        "tqdm",
    ],
    extras_require={
        "vdl": ["visualdl"],
        "test": ["pytest", "ruff", "scipy"],
        "sbd": ["scipy"],  # SBD (VOC aug), Pascal Context and COCO-Stuff 10k labels are .mat files
        # danet-export --format onnx: paddle2onnx 2.x reads Paddle 3.x's PIR .json programs, 1.3.1 Paddle 2.6's
        # .pdmodel (neither reads the other's); onnxruntime checks the file.
        "onnx": ["paddle2onnx>=2.0.1,<2.2", "onnxruntime>=1.16"],
        "onnx-paddle26": ["paddle2onnx==1.3.1", "onnxruntime>=1.16"],
    },
    entry_points={
        "console_scripts": [
            "danet-train-executor=danet.train_executor:console",
            "danet-train-dygraph=danet.train_dygraph:console",
            "danet-eval=danet.eval:console",
            "danet-predict=danet.tools.predict:console",
            "danet-export=danet.tools.export:console",
            "danet-convert=danet.tools.convert:console",
            "danet-import=danet.tools.import_weights:console",
            "danet-demo=danet.tools.demo:main",
            "danet-benchmark=danet.tools.benchmark:console",
            "danet-prepare-cityscapes=danet.tools.prepare_cityscapes:main",
            "danet-prepare-dataset=danet.tools.prepare_dataset:main",
            "danet-gpu-check=danet.tools.gpu_check:console",
            "danet-make-synthetic=danet.tools.make_synthetic_dataset:main",
        ]
    },
)
