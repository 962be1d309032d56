"""FedGAN: hospitals jointly train a generative model of their medical images with Flower,
without any image leaving its hospital, and publish a synthetic dataset."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedgan")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
