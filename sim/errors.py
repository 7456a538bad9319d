"""Errors a user can act on.

Every error raised for a user mistake derives from :class:`ServeLabError`. The command line
catches it, prints ``error: <message>`` and exits with status 2, never a traceback. A message
says where (flag, file, YAML path), what was expected, what was found and what to do.
"""


class ServeLabError(Exception):
    """A user mistake or an impossible configuration, with an actionable message."""


class CatalogError(ServeLabError):
    """Unknown model or GPU, or a model config.json that cannot be read."""


class ConfigError(ServeLabError):
    """An engine or workload setting that is out of range or inconsistent."""


class ManifestError(ServeLabError):
    """A Kubernetes manifest that does not match what ServeLab can simulate."""


class OutOfMemoryError(ConfigError):
    """vLLM's start-up refusal for want of GPU memory (:func:`sim.memory.plan_memory`).

    ``kind`` says which shortfall, so that a caller can tell them apart without reading the
    message, whose wording follows vLLM's and may change:

    * ``WEIGHTS``: the weights take (nearly) all the memory vLLM may use; only a larger
      tensor-parallel size or GPU helps;
    * ``KV_CACHE``: the weights fit, but the activations and CUDA graphs leave nothing for the
      KV cache;
    * ``MAX_MODEL_LEN``: there is a KV cache, but it cannot hold one ``max_model_len`` sequence.
    """

    WEIGHTS = "weights"
    KV_CACHE = "kv_cache"
    MAX_MODEL_LEN = "max_model_len"

    def __init__(self, message: str, kind: str) -> None:
        if kind not in (self.WEIGHTS, self.KV_CACHE, self.MAX_MODEL_LEN):
            raise ValueError(f"OutOfMemoryError kind: expected weights, kv_cache or max_model_len, got {kind!r}")
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # pickle (a process pool's result) passes both arguments, not only the message
        return type(self), (str(self), self.kind)
