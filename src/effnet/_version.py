"""The package version, in a leaf module: anything (downloads' User-Agent, exports' metadata, the server)
can read it without importing the package's face and everything behind it."""

__version__ = "0.1.0"
