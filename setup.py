from setuptools import find_packages, setup

setup(
    name="altsg-fairseq",
    version="0.1.0",
    description="Alternating synthetic and real gradients (Shang & Zhang, 2019) as a fairseq plugin",
    long_description=open("README.md", encoding="utf8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["altsg_fairseq", "altsg_fairseq.*"]),
    package_data={"altsg_fairseq.modules": ["kernels/*.cu"]},
    python_requires=">=3.10",
    # fairseq itself is installed separately (see README: ve-fairseq or
    # fairseq-fixed, without torchaudio), so that pip never replaces torch.
    install_requires=["torch>=2.6", "numpy<2", "numba>=0.59", "sentencepiece"],
    extras_require={
        "fairseq": ["ve-fairseq==0.12.3"],
        "cuda": ["cupy-cuda12x>=13,<14"],
        "test": ["pytest"],
    },
)
