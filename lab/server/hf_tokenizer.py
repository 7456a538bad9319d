"""A Hugging Face tokenizer folder for the prompt side of the emulator (``--tokenizer DIR``).

``vllm serve MODEL --tokenizer DIR`` tokenizes prompts with the tokenizer in DIR; so does
``servelab serve`` when given one. Then prompt lengths (what the scheduler and
``max_model_len`` see), ``/tokenize`` and ``/detokenize`` agree with a client that uses the
same tokenizer, such as ``vllm bench serve --tokenizer DIR``, which checks the server's
``/tokenize`` against its own count before it sends a single request. The answer's text is
still the emulator's words (one token each, ``generation.py``): only its length matters.

Reads DIR/tokenizer.json with the ``tokenizers`` package (no ``transformers``, no hub) and
DIR/tokenizer_config.json for the BOS token, which a chat prompt starts with. Completion
prompts get the tokenizer's own special tokens (its post-processor), as vLLM's
``add_special_tokens=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.server.tokenizer import last_word
from sim.errors import ConfigError


class HFTokenizer:
    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        path = folder / "tokenizer.json" if folder.is_dir() else folder
        if not path.is_file():
            raise ConfigError(f"--tokenizer {folder}: no tokenizer.json there; expected a Hugging Face tokenizer "
                              "folder (what save_pretrained writes), or leave --tokenizer out for the built-in one")
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError("--tokenizer needs the 'tokenizers' package: pip install tokenizers") from None
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the package's own parse error, in one line
            raise ConfigError(f"--tokenizer {folder}: cannot read {path.name}: {exc}") from None
        self.path = path
        bos = None
        config = path.parent / "tokenizer_config.json"
        if config.is_file():
            token = json.loads(config.read_text(encoding="utf-8")).get("bos_token")
            if isinstance(token, dict):  # older configs spell an AddedToken as a dict
                token = token.get("content")
            bos = self._tok.token_to_id(token) if isinstance(token, str) else None
        self.bos_ids = [bos] if bos is not None else []

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    @property
    def random_dataset_vocab_size(self) -> int:
        """The ids vLLM's random dataset draws prompts from: the vocabulary without added
        tokens (``tokenizer.vocab_size``), less the special tokens in it."""
        base = self._tok.get_vocab_size(with_added_tokens=False)
        special = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
        inside = {self._tok.token_to_id(t) for t in special} - {None}
        return max(1, base - sum(1 for i in inside if i < base))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids: list[int]) -> str:
        return self._tok.decode(list(token_ids), skip_special_tokens=False)

    def role_ids(self, role: str) -> list[int]:
        return self.encode(f"<|{role}|>\n")

    def token_strs(self, token_ids: list[int]) -> list[str]:
        return [self._tok.id_to_token(t) or "" for t in token_ids]

    def last_word(self, text: str) -> str | None:
        return last_word(text)


def load_tokenizer(folder: str | Path | None):
    """The built-in word tokenizer, or the Hugging Face tokenizer in ``folder``."""
    if folder is None:
        from lab.server.tokenizer import Tokenizer

        return Tokenizer()
    return HFTokenizer(folder)
