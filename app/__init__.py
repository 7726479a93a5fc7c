"""fit-check: streams an "is this engineer a fit for you?" analysis over Server-Sent Events."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fit-check")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
