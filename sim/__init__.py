"""ServeLab's simulator: a library with no UI, no Kubernetes and no network.

Dependencies point one way: ``lab`` imports ``sim``; ``sim`` never imports ``lab``,
streamlit or kubernetes, and does no I/O beyond reading its own packaged data files.
"""

__version__ = "0.1.0"
