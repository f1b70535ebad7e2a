"""embedx: exact, fast, resumable speech-model embeddings in HDF5, and honest probes on them."""

__version__ = "0.2.0"
