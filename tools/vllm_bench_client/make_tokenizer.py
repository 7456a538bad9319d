"""Train a small byte-level BPE tokenizer and save it as a Hugging Face tokenizer folder.

`vllm bench serve` needs a tokenizer to build its prompts (``--tokenizer DIR``), and there is
no model hub here. This trains one in about a second with the ``tokenizers`` package on the
repository's own prose (README.md and docs/*.md, deterministic), and saves it with
``transformers.PreTrainedTokenizerFast.save_pretrained``, the layout vLLM's ``get_tokenizer``
and ``servelab serve --tokenizer DIR`` both read (tokenizer.json, tokenizer_config.json).

Runs in the vLLM reference venv, which has both packages:

    .venv-vllm/bin/python tools/vllm_bench_client/make_tokenizer.py OUT_DIR [--vocab-size 2000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def corpus() -> list[str]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [line for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def train(out_dir: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[0], eos_token=specials[1])
    fast.save_pretrained(str(out_dir))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--vocab-size", type=int, default=2000)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    train(args.out_dir, args.vocab_size)
    print(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
