from setuptools import find_packages, setup

# fairseq itself is installed separately (see README: ve-fairseq or
# fairseq-fixed, without torchaudio), so that pip never replaces torch.
# NumPy is not capped: the plugin's whole fairseq path (fairseq-preprocess,
# fairseq-train with --use-sg, validation, checkpoint resume, fairseq-eval-lm,
# fairseq-interactive sampling) was run on numpy 2.4.6 with ve-fairseq 0.12.3
# and works (README, "NumPy 2"); CuPy for CUDA 13 needs numpy >= 2.
INSTALL_REQUIRES = ["torch>=2.6", "numpy>=1.24", "numba>=0.59", "sentencepiece"]

# The CUDA kernels need the CuPy wheel of PyTorch's CUDA major (torch.version.cuda);
# forget_mult_cuda.install_hint() names the extra, forget_mult_cuda.CUPY_FOR_CUDA maps them.
EXTRAS_REQUIRE = {
    "fairseq": ["ve-fairseq==0.12.3"],
    "cuda12": ["cupy-cuda12x>=13,<14"],
    "cuda13": ["cupy-cuda13x>=14,<15", "numpy>=2"],  # CuPy 14 requires numpy >= 2
    "test": ["pytest"],
}
EXTRAS_REQUIRE["cuda"] = EXTRAS_REQUIRE["cuda12"]  # the name older instructions use

setup(
    name="altsg-fairseq",
    version="0.1.0",
    description="Alternating synthetic and real gradients (Shang & Zhang, 2019) as a fairseq plugin",
    long_description=open("README.md", encoding="utf8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["altsg_fairseq", "altsg_fairseq.*"]),
    package_data={"altsg_fairseq.modules": ["kernels/*.cu"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
